//! Stand-ins for the two outside parties, for tests and the demo: signal-server's
//! verification-session API and hCaptcha's siteverify. They follow `shared/UPSTREAM.md`, not
//! the gate's code, and `serve` never starts them. Each runs as a real HTTP server on loopback
//! and exposes its state (the SMS inbox, call counters, fault modes) both in-process and over a
//! small `/emulator/...` HTTP API.

pub mod hcaptcha;
pub mod signal_server;

use std::net::TcpListener;

/// Binds a loopback listener on a free port.
///
/// # Errors
/// When no port can be bound.
pub fn loopback_listener() -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0))
}

/// What an emulator does to the requests it gets, for fault tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum FaultMode {
    /// Behave as the real service does.
    Normal,
    /// Wait this long before answering normally.
    Slow { millis: u64 },
    /// signal-server only: wait this long before sending or checking a code, then go on as
    /// normal, as a server whose SMS provider is slow would.
    SlowCodes { millis: u64 },
    /// Answer every request with this status and a short text body.
    Fail { status: u16 },
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer every request 429, with `Retry-After` when given.
    RateLimited { retry_after: Option<u64> },
    /// Answer with a huge body.
    Oversized,
    /// hCaptcha only: answer as normal, but with this status, as a proxy in front of it might.
    NormalBodyWithStatus { status: u16 },
}
