//! WebSocket pass-through benchmark: added latency per frame through the gate (p50, p99),
//! against the signal-server emulator directly, in the same run; then how many idle
//! connections one gate holds and its resident memory. Run with
//! `cargo build --release && cargo run --release --example ws_bench [connections]`
//! (the gate and the emulator run as separate processes from target/release/signal-gate).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signal_gate::websocket::frames::WebSocketMessage;
use tokio_tungstenite::tungstenite::Message;

// The process helpers of the HTTP benchmark; this one uses some of them.
#[allow(dead_code)]
#[path = "bench/processes.rs"]
mod processes;

use processes::{free_port, status_kib, Server, WorkDir};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ROUNDS: usize = 2_000;

/// `signal-gate` with `args`, its output in `log`, stopped when dropped.
fn spawn(name: &'static str, args: &[&str], vars: &[(&str, String)], log: &Path) -> Server {
    let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/signal-gate");
    let mut command = Command::new(binary);
    command
        .args(args)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn");
    Server::start(name, command, log)
}

async fn connect(url: &str) -> Option<Socket> {
    let mut socket = tokio_tungstenite::connect_async(url).await.ok()?.0;
    // The server's push on connect.
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    Some(socket)
}

/// Frames per connection, below the gate's per-connection burst of 100 so that its rate bound
/// is not what is measured.
const FRAMES_PER_CONNECTION: u64 = 90;

async fn round_trips(url: &str) -> Vec<Duration> {
    let mut socket = connect(url).await.expect("connected");
    let mut times = Vec::with_capacity(ROUNDS);
    for id in 0..ROUNDS as u64 {
        if id > 0 && id % FRAMES_PER_CONNECTION == 0 {
            socket = connect(url).await.expect("connected");
        }
        let frame = WebSocketMessage::request(id + 10, "GET", "/v1/keys", None).to_bytes();
        let started = Instant::now();
        socket
            .send(Message::Binary(frame.into()))
            .await
            .expect("sent");
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Binary(_)) {
                break;
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let connections: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let (signal, hcaptcha, gate_port, admin) = (free_port(), free_port(), free_port(), free_port());
    let work = WorkDir::new();
    let mut emulator = spawn(
        "emulators",
        &[
            "emulate",
            "--signal-port",
            &signal.to_string(),
            "--hcaptcha-port",
            &hcaptcha.to_string(),
        ],
        &[],
        &work.join("emulators.log"),
    );
    emulator.wait_for_port(signal);
    let vars = [
        ("SIGNAL_GATE_LISTEN", format!("127.0.0.1:{gate_port}")),
        ("SIGNAL_GATE_ADMIN__LISTEN", format!("127.0.0.1:{admin}")),
        ("SIGNAL_GATE_WORKERS", "1".to_owned()),
        (
            "SIGNAL_GATE_UPSTREAM__URL",
            format!("http://127.0.0.1:{signal}"),
        ),
        (
            "SIGNAL_GATE_HCAPTCHA__SECRET",
            "0x0000000000000000000000000000000000000000".to_owned(),
        ),
        (
            "SIGNAL_GATE_HCAPTCHA__SITEKEY",
            "10000000-ffff-ffff-ffff-000000000001".to_owned(),
        ),
        (
            "SIGNAL_GATE_HCAPTCHA__VERIFY_URL",
            format!("http://127.0.0.1:{hcaptcha}/siteverify"),
        ),
        (
            "SIGNAL_GATE_NUMBER_KEY",
            "a benchmark number key of enough length".to_owned(),
        ),
        (
            "SIGNAL_GATE_DATABASE__URL",
            format!("sqlite://{}", work.join("gate.db").display()),
        ),
    ];
    let mut gate = spawn("gate", &["serve"], &vars, &work.join("gate.log"));
    gate.wait_for_port(gate_port);

    let direct_url = format!("ws://127.0.0.1:{signal}/v1/websocket/");
    let gate_url = format!("ws://127.0.0.1:{gate_port}/v1/websocket/");
    // Alternate the two, twice, and keep each side's figures together.
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..2 {
        direct.extend(round_trips(&direct_url).await);
        through.extend(round_trips(&gate_url).await);
    }
    direct.sort();
    through.sort();
    println!(
        "frame round trip over {} frames each, alternated",
        direct.len()
    );
    println!("{:<24} {:>10} {:>10}", "", "p50 (us)", "p99 (us)");
    for (name, times) in [
        ("direct to the emulator", &direct),
        ("through the gate", &through),
    ] {
        let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
        println!("{name:<24} {:>10} {:>10}", p50.as_micros(), p99.as_micros());
    }
    let added = |p| percentile(&through, p).saturating_sub(percentile(&direct, p));
    println!(
        "{:<24} {:>10} {:>10}",
        "added by the gate",
        added(0.5).as_micros(),
        added(0.99).as_micros()
    );

    let idle_before = status_kib(gate.pid(), "VmRSS:");
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        match connect(&gate_url).await {
            Some(socket) => held.push(socket),
            None => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_after = status_kib(gate.pid(), "VmRSS:");
    println!("idle connections held    {} of {connections}", held.len());
    println!(
        "gate resident memory     {} MiB before, {} MiB after",
        idle_before / 1024,
        idle_after / 1024
    );
    drop(held);
}
