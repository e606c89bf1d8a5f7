//! Alerts: one per rule and key in a window, delivered to a webhook with retries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::{self, Data, Json};
use actix_web::{App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::spawn_app_with;

/// A webhook receiver on loopback that fails its first `failures` deliveries.
struct Receiver {
    seen: Mutex<Vec<Value>>,
    failures_left: AtomicUsize,
}

async fn receive(receiver: Data<Receiver>, body: Json<Value>) -> HttpResponse {
    receiver.seen.lock().expect("lock").push(body.into_inner());
    let failing = receiver.failures_left.load(Ordering::SeqCst) > 0;
    if failing {
        receiver.failures_left.fetch_sub(1, Ordering::SeqCst);
        return HttpResponse::ServiceUnavailable().finish();
    }
    HttpResponse::Ok().finish()
}

fn start_receiver(failures: usize) -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        seen: Mutex::new(Vec::new()),
        failures_left: AtomicUsize::new(failures),
    });
    let data = Data::from(Arc::clone(&receiver));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().expect("addr").port()
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(receive))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (url, receiver)
}

fn alerts_named(receiver: &Receiver, name: &str) -> Vec<Value> {
    let seen = receiver.seen.lock().expect("lock");
    seen.iter()
        .filter(|a| a["alert"] == name)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_captcha_failure_spike_alerts_once_per_window_and_retries_the_webhook() {
    let (url, receiver) = start_receiver(1);
    let app = spawn_app_with(&[
        ("SIGNAL_GATE_ALERTS__WEBHOOK_URL", &url),
        ("SIGNAL_GATE_ALERTS__CAPTCHA_FAILURES_PER_MINUTE", "3"),
    ])
    .await;
    for i in 0..20 {
        let body = json!({"number": "+447400123456", "captcha": format!("E1_forged{i}")});
        app.post("/v1/register", &body, &format!("10.9.{i}.1"))
            .await;
    }
    // The first delivery fails; the retry a second later gets through.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let deliveries = alerts_named(&receiver, "captcha_failures");
    assert_eq!(
        deliveries.len(),
        2,
        "one alert, delivered twice: {deliveries:?}"
    );
    assert_eq!(deliveries[0], deliveries[1]);
}

#[tokio::test]
async fn a_sequential_flood_alerts_once_per_range() {
    let (url, receiver) = start_receiver(0);
    let app = spawn_app_with(&[("SIGNAL_GATE_ALERTS__WEBHOOK_URL", &url)]).await;
    for range in ["+4474009911", "+4474009922"] {
        for last in 10..20 {
            app.register(&format!("{range}{last}"), &format!("10.8.{last}.1"))
                .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = alerts_named(&receiver, "sequential_numbers");
    assert_eq!(
        alerts.len(),
        2,
        "one per range, not one per request: {alerts:?}"
    );
    assert!(
        !format!("{alerts:?}").contains("4474009911"),
        "no number in the alert"
    );
}
