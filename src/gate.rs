//! The gate's shared state: everything a decision needs, built once at start-up.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;

use crate::captcha::CaptchaVerifier;
use crate::clock::Clock;
use crate::configuration::{Mode, Settings};
use crate::domain::{ClientAddress, NumberKey, TrustedProxies};
use crate::limits::LimitStore;
use crate::storage::GateStore;
use crate::upstream::{ClientContext, UpstreamClient};

/// How long the gate remembers which number a session belongs to. signal-server does not say
/// when a session expires; registration-service keeps them for hours, not days.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub struct Gate {
    pub mode: Mode,
    pub trusted_proxies: TrustedProxies,
    pub number_key: NumberKey,
    pub clock: Arc<dyn Clock>,
    pub limits: Arc<dyn LimitStore>,
    pub store: Arc<dyn GateStore>,
    pub captcha: CaptchaVerifier,
    pub upstream: UpstreamClient,
}

impl Gate {
    /// # Errors
    /// When the captcha verifier or the upstream client cannot be built.
    pub fn new(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        limits: Arc<dyn LimitStore>,
        store: Arc<dyn GateStore>,
    ) -> anyhow::Result<Gate> {
        use secrecy::ExposeSecret;
        Ok(Gate {
            mode: settings.mode,
            trusted_proxies: settings.trusted_proxies.clone(),
            number_key: NumberKey::new(settings.number_key.expose_secret()),
            clock,
            limits,
            store,
            captcha: CaptchaVerifier::new(&settings.hcaptcha)?,
            upstream: UpstreamClient::new(&settings.upstream)?,
        })
    }

    /// The client behind a request, as DESIGN.md resolves it.
    pub fn client_address(&self, request: &HttpRequest) -> ClientAddress {
        let peer = request
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        // A header line that is not text reads as garbage, which ends the walk safely.
        let lines: Vec<&str> = request
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| v.to_str().unwrap_or("\u{FFFD}"))
            .collect();
        ClientAddress::resolve(peer, lines.into_iter(), &self.trusted_proxies)
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// The parts of a client's request that travel upstream with it.
pub fn client_context<'a>(request: &'a HttpRequest, address: &ClientAddress) -> ClientContext<'a> {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    ClientContext {
        address: address.ip(),
        user_agent: header(actix_web::http::header::USER_AGENT),
        accept_language: header(actix_web::http::header::ACCEPT_LANGUAGE),
    }
}
