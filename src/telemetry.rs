//! Logging: one JSON object per line on standard output, `RUST_LOG` to change the levels.

use tracing_subscriber::EnvFilter;

/// Quiet by default: the gate's own decisions at info, the libraries' chatter at warn.
const DEFAULT_FILTER: &str =
    "info,sqlx=warn,hyper=warn,hyper_util=warn,reqwest=warn,actix_server=warn,actix_web=warn";

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
