//! Logging: one JSON object per line on standard output, `RUST_LOG` to change the levels.

use tracing_subscriber::EnvFilter;

/// Quiet by default: the gate's own decisions at info, the libraries' chatter at warn.
/// actix's HTTP parser reports every malformed request from a client at ERROR; those are the
/// client's faults, answered with a 4xx, and would let anyone flood the log, so they are off.
const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,hyper_util=warn,reqwest=warn,\
     actix_server=warn,actix_web=warn,actix_http::h1::dispatcher=off";

/// Installs the global subscriber; call once, at start-up.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

/// An HTTP client's error and its causes, for a log line, without the URL: a URL can name a
/// session, and session ids are kept out of logs.
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
