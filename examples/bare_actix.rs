//! The reference point of the refusal benchmark (`scripts/bench.sh`): the least an actix-web
//! handler can do to refuse `POST /v1/register`. It reads the body to its end, so the
//! connection stays open, and answers 429 with a JSON body and `Retry-After`, as the gate does,
//! without looking at anything. Run with
//! `cargo run --release --example bare_actix -- 127.0.0.1:PORT [workers]`.

use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};

async fn refuse(_body: Bytes) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header(("Retry-After", "3600"))
        .content_type("application/json")
        .body(r#"{"code":"rate_limited","message":"Too many requests.","retryAfter":3600}"#)
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8099".to_owned());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or(1);
    actix_web::rt::System::new().block_on(
        HttpServer::new(|| App::new().default_service(web::to(refuse)))
            .workers(workers)
            .bind(listen)?
            .run(),
    )
}
