//! Faults: a locked or corrupted database, a killed process. The gate answers with a clear
//! status, lets nothing through, and loses nothing it acknowledged.

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use serde_json::json;
use signal_gate::emulators::FaultMode;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::helpers::{
    error_of, spawn_app, spawn_app_with, spread_number, stored_rows, unreachable_serve_vars,
    ServeProcess, BINARY, SITEKEY,
};

/// A second connection holding the database's write lock until it rolls back.
async fn lock_database(file: &std::path::Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", file.display());
    let mut locker = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .connect()
        .await
        .expect("open");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("lock");
    locker
}

#[tokio::test]
async fn a_locked_database_is_a_503_and_nothing_passes() {
    let app = spawn_app_with(&[("SIGNAL_GATE_DATABASE__BUSY_TIMEOUT", "300ms")]).await;
    let mut locker = lock_database(&app.database).await;

    let response = app.register(&spread_number(1), "192.0.2.1").await;
    assert_eq!(
        error_of(response).await,
        (503, "storage_unavailable".into(), None)
    );
    assert_eq!(
        app.signal.sms_sent(),
        0,
        "nothing went out while storage failed"
    );

    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    locker.close().await.expect("close");
    assert_eq!(
        app.register(&spread_number(1), "192.0.2.2").await.status(),
        200
    );
}

#[tokio::test]
async fn a_lock_shorter_than_the_busy_timeout_is_waited_for() {
    let app = spawn_app_with(&[("SIGNAL_GATE_DATABASE__BUSY_TIMEOUT", "5s")]).await;
    assert_eq!(
        app.register(&spread_number(0), "192.0.2.1").await.status(),
        200
    );
    let mut locker = lock_database(&app.database).await;
    let unlocking = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sqlx::query("ROLLBACK")
            .execute(&mut locker)
            .await
            .expect("unlock");
        locker.close().await.expect("close");
    });
    // A send slot is claimed by reading and then writing; a deferred transaction got
    // SQLITE_BUSY at once on the write instead of waiting out the busy timeout.
    let started = std::time::Instant::now();
    let response = app.register(&spread_number(1), "192.0.2.2").await;
    assert_eq!(response.status(), 200, "{:?}", error_of(response).await);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "it waited for the lock"
    );
    unlocking.await.expect("unlocked");
}

#[test]
fn a_corrupted_database_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("gate.db");
    std::fs::write(
        &database,
        b"this is not a database, just text that looks nothing like one",
    )
    .expect("write");
    let output = Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .envs(unreachable_serve_vars())
        .env(
            "SIGNAL_GATE_DATABASE__URL",
            format!("sqlite://{}", database.display()),
        )
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn after_kill_9_every_acknowledged_cooldown_is_still_there() {
    let serve = ServeProcess::prepare();
    let mut first = serve.spawn(Stdio::null).await;
    // Traffic in flight while the process dies: the acknowledged ones must persist.
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let number = spread_number(i);
        let sent = serve.register(&number, &format!("10.7.{i}.1")).await;
        if sent.is_ok_and(|r| r.status() == 200) {
            acknowledged.push(number);
        }
        if i == 30 {
            first.kill().expect("kill -9");
        }
    }
    let _ = first.wait();
    assert!(
        acknowledged.len() >= 25,
        "most requests were served before the kill"
    );

    let mut second = serve.spawn(Stdio::null).await;
    for (i, number) in acknowledged.iter().enumerate() {
        let response = serve
            .register(number, &format!("10.6.{i}.1"))
            .await
            .expect("answered");
        assert_eq!(response.status(), 429, "cooldown of {i} survived");
    }
    second.kill().expect("stop");
    let _ = second.wait();
}

#[tokio::test]
async fn sigterm_drains_requests_in_flight_and_refuses_new_ones() {
    let serve = ServeProcess::prepare();
    let mut gate = serve.spawn(Stdio::null).await;
    serve
        .signal
        .set_mode(signal_gate::emulators::FaultMode::Slow { millis: 1500 });
    let in_flight = {
        let token = serve.hcaptcha.issue_token(SITEKEY, "localhost");
        let body = json!({"number": spread_number(3), "captcha": token});
        tokio::spawn(
            reqwest::Client::new()
                .post(format!("{}/v1/register", serve.url))
                .json(&body)
                .send(),
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    Command::new("kill")
        .args(["-TERM", &gate.id().to_string()])
        .status()
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let fresh = serve.register(&spread_number(4), "192.0.2.1").await;
    assert!(fresh.is_err(), "a new connection after SIGTERM is refused");
    let answer = in_flight
        .await
        .expect("task")
        .expect("the request in flight completes");
    assert_eq!(answer.status(), 200);
    let status = gate.wait().expect("exits");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stopped within the grace period"
    );
}

/// A tiny tmpfs of our own for disk faults; unmounted on drop. Mounting needs root, which the
/// test command and CI run as.
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(size: &str) -> TinyDisk {
        static MOUNTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MOUNTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("signal-gate-disk-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a tmpfs needs root (the test command runs as root)"
        );
        TinyDisk(dir)
    }

    /// Remounts read-only; the gate's files must be closed (a busy mount cannot be remounted).
    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .expect("runs");
        assert!(status.success());
    }

    /// Writes until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.0.join("filler")).expect("filler");
        let block = vec![0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
    }

    /// Gives the space taken by `fill` back.
    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("filler removed");
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test]
async fn a_full_disk_is_a_503_and_nothing_passes() {
    let disk = TinyDisk::mount("2m");
    let url = format!("sqlite://{}", disk.0.join("gate.db").display());
    let app = spawn_app_with(&[("SIGNAL_GATE_DATABASE__URL", &url)]).await;
    assert_eq!(
        app.register(&spread_number(1), "192.0.2.1").await.status(),
        200
    );

    // SQLite keeps writing into the space its WAL already holds; once that runs out, every
    // write fails. Each answer is a success that was stored, or a 503; never a code sent
    // without its cooldown stored.
    disk.fill();
    let (mut served, mut refused) = (1, 0);
    for i in 2..300 {
        let response = app
            .register(&spread_number(i), &format!("10.{}.{}.1", i / 200, i % 200))
            .await;
        match response.status().as_u16() {
            200 => served += 1,
            _ => {
                assert_eq!(
                    error_of(response).await,
                    (503, "storage_unavailable".into(), None)
                );
                refused += 1;
            }
        }
        if refused >= 1 {
            break;
        }
    }
    assert_eq!(refused, 1, "the full disk was noticed");
    assert_eq!(
        app.signal.sms_sent(),
        served,
        "no code went out that was not stored"
    );
}

#[tokio::test]
async fn after_a_full_disk_is_freed_every_acknowledged_write_reaches_the_file() {
    let disk = TinyDisk::mount("1m");
    let file = disk.0.join("gate.db");
    let url = format!("sqlite://{}", file.display());
    let app = spawn_app_with(&[("SIGNAL_GATE_DATABASE__URL", &url)]).await;
    let register = |i: usize| {
        let (number, address) = (spread_number(i), format!("10.{}.{}.1", i / 200, i % 200));
        let app = &app;
        async move { app.register(&number, &address).await }
    };
    assert_eq!(register(1).await.status(), 200);

    // Two failed commits in a row once left sqlx counting a transaction that SQLite had
    // already rolled back: every later write went into a transaction never committed.
    disk.fill();
    let mut refused = 0;
    for i in 2..200 {
        if register(i).await.status() == 503 {
            refused += 1;
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "the full disk was noticed");
    let ready = app
        .http
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(
        ready.status(),
        503,
        "not ready while no write reaches the disk"
    );

    disk.free();
    let stored_before = stored_rows(&file, "send_schedules").await;
    for i in 500..503 {
        assert_eq!(
            register(i).await.status(),
            200,
            "served again once there is room"
        );
    }
    assert_eq!(
        stored_rows(&file, "send_schedules").await,
        stored_before + 3,
        "another connection sees every acknowledged cooldown"
    );
}

#[tokio::test]
async fn a_read_only_disk_stops_start_up_with_a_clear_message() {
    let disk = TinyDisk::mount("2m");
    let url = format!("sqlite://{}", disk.0.join("gate.db").display());
    let mut serve = ServeProcess::prepare();
    serve.vars.insert("SIGNAL_GATE_DATABASE__URL".into(), url);
    let mut gate = serve.spawn(Stdio::null).await;
    assert_eq!(
        serve
            .register(&spread_number(1), "192.0.2.1")
            .await
            .expect("up")
            .status(),
        200
    );
    gate.kill().expect("stop");
    let _ = gate.wait();

    disk.remount_read_only();
    let output = Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .envs(&serve.vars)
        .output()
        .expect("runs");
    assert!(
        !output.status.success(),
        "no gate without a writable database"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database"), "{stderr}");
}

#[tokio::test]
async fn a_deleted_database_file_is_a_503_not_a_silent_loss() {
    let app = crate::helpers::spawn_app().await;
    assert_eq!(
        app.register(&spread_number(1), "192.0.2.1").await.status(),
        200
    );

    std::fs::remove_file(&app.database).expect("delete the database");

    let response = app.register(&spread_number(2), "192.0.2.2").await;
    assert_eq!(
        error_of(response).await,
        (503, "storage_unavailable".into(), None)
    );
    assert_eq!(
        app.signal.sms_sent(),
        1,
        "nothing sent that would be lost at the next start"
    );
    let ready = app
        .http
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .expect("up");
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn a_code_that_may_have_gone_out_stays_charged() {
    let app = spawn_app_with(&[("SIGNAL_GATE_UPSTREAM__TIMEOUT", "1s")]).await;
    app.signal.set_mode(FaultMode::SlowCodes { millis: 1500 });
    let number = spread_number(1);

    let response = app.register(&number, "192.0.2.1").await;
    assert_eq!(
        error_of(response).await,
        (504, "upstream_timeout".into(), None)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.signal.inbox(&number).len(),
        1,
        "the slow server sent the code anyway"
    );

    app.signal.set_mode(FaultMode::Normal);
    let (status, code, _) = error_of(app.register(&number, "192.0.2.2").await).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limited"),
        "the send slot stayed taken"
    );
    assert_eq!(app.signal.inbox(&number).len(), 1);
}

#[tokio::test]
async fn a_guess_that_may_have_been_checked_stays_counted() {
    let app = spawn_app_with(&[("SIGNAL_GATE_UPSTREAM__TIMEOUT", "1s")]).await;
    let number = spread_number(2);
    let session = app.session_for(&number, "192.0.2.1").await;
    app.signal.set_mode(FaultMode::SlowCodes { millis: 1500 });
    for _ in 0..3 {
        let response = app.verify(&session, &number, "000000", "192.0.2.1").await;
        assert_eq!(error_of(response).await.0, 504);
    }
    let (status, ..) = error_of(app.verify(&session, &number, "000000", "192.0.2.1").await).await;
    assert_eq!(
        status, 429,
        "three timed-out guesses spent the session's budget"
    );
}

/// Sends `bytes` on a fresh connection and reads until the gate closes it.
async fn raw_exchange(url: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connected");
    stream.write_all(bytes).await.expect("sent");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_the_http_parser_refuses_get_json_errors_with_stable_codes() {
    let app = spawn_app().await;
    let many_headers: String = (0..120).map(|i| format!("X-{i}: y\r\n")).collect();
    let cases = [
        ("GARBAGE\r\n\r\n".to_owned(), "400", "malformed_request"),
        (
            "GET / HTTP/9.9\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "POST /v1/register HTTP/1.1\r\nHost x\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             Content-Length: 6\r\n\r\nabcdef"
                .to_owned(),
            "400",
            "malformed_request",
        ),
        (
            format!("POST /v1/register HTTP/1.1\r\n{many_headers}\r\n"),
            "431",
            "headers_too_large",
        ),
        // The head never finishes: actix-http's head timeout.
        (
            "POST /v1/register HTTP/1.1\r\nHost: x\r\n".to_owned(),
            "408",
            "request_timeout",
        ),
    ];
    for (request, status, code) in &cases {
        let answer = raw_exchange(&app.url, request.as_bytes()).await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(body["code"], *code, "{request:?}");
    }
    let metrics = app.metrics().await;
    let counted = metrics
        .lines()
        .find_map(|line| line.strip_prefix("signal_gate_malformed_http_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("the counter is exported");
    // The counter is process-wide and other tests share the process.
    assert!(counted >= cases.len() as u64, "{counted}");
}

#[tokio::test]
async fn a_later_head_on_a_kept_alive_connection_is_timed_too() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let app = spawn_app().await;
    let address = app.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connected");
    let mut stream = BufReader::new(stream);
    let first = "POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 2\r\n\r\n{}";
    stream
        .get_mut()
        .write_all(first.as_bytes())
        .await
        .expect("sent");
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("a header line");
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("a length");
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .await
        .expect("the first answer's body");

    // actix-http times only a connection's first head; this one never finishes.
    let started = std::time::Instant::now();
    let second = "POST /v1/register HTTP/1.1\r\nHost: x\r\n";
    stream
        .get_mut()
        .write_all(second.as_bytes())
        .await
        .expect("sent");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_string(&mut answer))
        .await
        .expect("the gate closed the connection")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
