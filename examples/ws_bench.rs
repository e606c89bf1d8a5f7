//! WebSocket pass-through benchmark: added latency per frame through the gate (p50, p99),
//! against the signal-server emulator directly, in the same run; then idle connections held
//! and the resident memory they cost: unauthenticated sockets through the gate, account
//! sockets through the gate (relayed at once, two descriptors each), and unauthenticated
//! sockets straight to the emulator. Run with
//! `cargo build --release && cargo run --release --example ws_bench [idle [relayed]]`
//! (the gate and the emulator run as separate processes from target/release/signal-gate).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signal_gate::websocket::frames::WebSocketMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
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

/// Credentials the emulator takes as an account's; signal-server pushes to such a socket.
const ACCOUNT: &str = "Basic YmVuY2g6YmVuY2g=";

/// An unauthenticated socket, or an account's when `account`, once the push on connect (an
/// account's only) has arrived.
async fn connect(url: &str, account: bool) -> Option<Socket> {
    let mut request = url.into_client_request().ok()?;
    if account {
        request
            .headers_mut()
            .insert("authorization", ACCOUNT.parse().ok()?);
    }
    let mut socket = tokio_tungstenite::connect_async(request).await.ok()?.0;
    if account {
        let pushed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
        if !matches!(pushed, Ok(Some(Ok(Message::Binary(_))))) {
            return None;
        }
    }
    Some(socket)
}

/// Frames per connection, below the gate's per-connection burst of 100 so that its rate bound
/// is not what is measured.
const FRAMES_PER_CONNECTION: u64 = 90;

async fn round_trips(url: &str) -> Vec<Duration> {
    let mut socket = connect(url, true).await.expect("connected");
    let mut times = Vec::with_capacity(ROUNDS);
    for id in 0..ROUNDS as u64 {
        if id > 0 && id % FRAMES_PER_CONNECTION == 0 {
            socket = connect(url, true).await.expect("connected");
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

/// One row of the idle table: how many of `count` sockets `url` held, and what they cost the
/// process `pid` that holds them.
async fn idle_row(label: &str, pid: u32, url: &str, account: bool, count: usize) -> Vec<Socket> {
    let before = status_kib(pid, "VmRSS:");
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        match connect(url, account).await {
            Some(socket) => held.push(socket),
            None => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_kib(pid, "VmRSS:");
    let each = after.saturating_sub(before) as f64 / held.len().max(1) as f64;
    println!(
        "{label:<34} {:>6} of {count:<6} {:>7} {:>7} {each:>9.1}",
        held.len(),
        before / 1024,
        after / 1024
    );
    held
}

/// The WebSocket connections the emulator has accepted so far.
async fn emulator_connections(signal: u16) -> u64 {
    let url = format!("http://127.0.0.1:{signal}/emulator/stats");
    let stats: serde_json::Value = reqwest::get(url)
        .await
        .expect("emulator stats")
        .json()
        .await
        .expect("stats JSON");
    stats["websocketConnections"].as_u64().unwrap_or_default()
}

/// The gate's environment for a run against the emulators on `signal` and `hcaptcha`.
fn gate_vars(work: &WorkDir, ports: [u16; 4]) -> Vec<(&'static str, String)> {
    let [signal, hcaptcha, gate, admin] = ports;
    vec![
        ("SIGNAL_GATE_LISTEN", format!("127.0.0.1:{gate}")),
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
            format!(
                "sqlite://{}",
                work.join(&format!("gate-{gate}.db")).display()
            ),
        ),
    ]
}

/// A fresh gate in front of the emulators, ready, and its WebSocket URL.
fn start_gate(work: &WorkDir, signal: u16, hcaptcha: u16) -> (Server, String) {
    let (port, admin) = (free_port(), free_port());
    let vars = gate_vars(work, [signal, hcaptcha, port, admin]);
    let log = work.join(&format!("gate-{port}.log"));
    let mut gate = spawn("gate", &["serve"], &vars, &log);
    gate.wait_for_port(port);
    (gate, format!("ws://127.0.0.1:{port}/v1/websocket/"))
}

fn argument(position: usize, default: usize) -> usize {
    std::env::args()
        .nth(position)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let idle = argument(1, 10_000);
    let relayed = argument(2, idle);
    let (signal, hcaptcha) = (free_port(), free_port());
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
    let (gate, gate_url) = start_gate(&work, signal, hcaptcha);

    let direct_url = format!("ws://127.0.0.1:{signal}/v1/websocket/");
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
        "frame round trip over {} frames each, alternated (account sockets)",
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
    drop(gate);

    // Each kind against a fresh process, so that one's freed memory does not hide another's.
    println!();
    println!(
        "{:<34} {:>16} {:>7} {:>7} {:>9}",
        "idle connections", "held", "MiB", "MiB", "KiB each"
    );
    println!("{:<34} {:>16} {:>7} {:>7}", "", "", "before", "after");
    let held = idle_row(
        "unauthenticated, direct (emulator)",
        emulator.pid(),
        &direct_url,
        false,
        idle,
    )
    .await;
    drop(held);

    let (gate, gate_url) = start_gate(&work, signal, hcaptcha);
    let opened_before = emulator_connections(signal).await;
    let held = idle_row(
        "unauthenticated, through the gate",
        gate.pid(),
        &gate_url,
        false,
        idle,
    )
    .await;
    let opened = emulator_connections(signal).await - opened_before;
    drop(held);
    drop(gate);

    let (gate, gate_url) = start_gate(&work, signal, hcaptcha);
    let held = idle_row(
        "account sockets, through the gate",
        gate.pid(),
        &gate_url,
        true,
        relayed,
    )
    .await;
    drop(held);
    drop(gate);
    println!(
        "signal-server sockets opened for the idle unauthenticated ones: {opened} (they wait \
         for a frame to relay); account sockets are relayed at once, two descriptors each"
    );
}
