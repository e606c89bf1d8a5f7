//! The gate's shared state: everything a decision needs, built once at start-up, and the few
//! helpers every pipeline step uses (client address, shadow mode, the keys of a number).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;

use crate::abuse::{
    rule_of, BlockKind, Blocklist, DestinationPolicy, PumpingPolicy, SequenceTracker, WideStatsMemo,
};
use crate::alerts::Alerter;
use crate::captcha::CaptchaVerifier;
use crate::clock::Clock;
use crate::configuration::{AbuseSettings, Mode, Settings};
use crate::decision::DecisionLog;
use crate::domain::{ClientAddress, NumberHash, NumberKey, PhoneNumber, TrustedProxies};
use crate::limits::LimitStore;
use crate::metrics::Metrics;
use crate::routes::ApiError;
use crate::storage::GateStore;
use crate::upstream::{ClientContext, UpstreamClient};

/// How long the gate remembers which number a session belongs to. signal-server does not say
/// when a session expires; registration-service keeps them for hours, not days.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Blocks of a hundred numbers the sequence tracker follows at most.
const SEQUENCE_CAPACITY: u64 = 200_000;

pub struct Gate {
    pub trusted_proxies: TrustedProxies,
    pub number_key: NumberKey,
    pub clock: Arc<dyn Clock>,
    pub limits: Arc<dyn LimitStore>,
    pub store: Arc<dyn GateStore>,
    pub captcha: CaptchaVerifier,
    pub upstream: UpstreamClient,
    pub policy: DestinationPolicy,
    pub blocklist: Arc<Blocklist>,
    pub sequences: SequenceTracker,
    pub pumping: PumpingPolicy,
    /// Recent counts over all traffic and whole countries, for pumping detection.
    pub wide_stats: WideStatsMemo,
    pub abuse: AbuseSettings,
    pub metrics: Arc<Metrics>,
    pub alerts: Alerter,
    mode: Mode,
    rule_modes: HashMap<String, Mode>,
}

/// The parts every gate needs that start-up builds: the stores and the clock.
pub struct GateParts {
    pub clock: Arc<dyn Clock>,
    pub limits: Arc<dyn LimitStore>,
    pub store: Arc<dyn GateStore>,
    pub blocklist: Arc<Blocklist>,
    pub metrics: Arc<Metrics>,
}

impl Gate {
    /// # Errors
    /// When the captcha verifier or the upstream client cannot be built.
    pub fn new(settings: &Settings, parts: GateParts) -> anyhow::Result<Gate> {
        use secrecy::ExposeSecret;
        let abuse = settings.abuse.clone();
        Ok(Gate {
            trusted_proxies: settings.trusted_proxies.clone(),
            number_key: NumberKey::new(settings.number_key.expose_secret()),
            clock: parts.clock,
            limits: parts.limits,
            store: parts.store,
            captcha: CaptchaVerifier::new(&settings.hcaptcha)?,
            upstream: UpstreamClient::new(&settings.upstream)?,
            policy: DestinationPolicy {
                allow: settings.policy.allow_countries.clone(),
                deny: settings.policy.deny_countries.clone(),
                deny_types: settings.policy.deny_number_types.clone(),
            },
            blocklist: parts.blocklist,
            sequences: SequenceTracker::new(
                abuse.sequential_threshold,
                abuse.sequential_window,
                SEQUENCE_CAPACITY,
            ),
            pumping: PumpingPolicy {
                ratio: abuse.pumping_ratio,
                min_sends: abuse.pumping_min_sends,
            },
            wide_stats: WideStatsMemo::default(),
            abuse,
            alerts: Alerter::new(settings.alerts.clone(), Arc::clone(&parts.metrics)),
            metrics: parts.metrics,
            mode: settings.mode,
            rule_modes: settings.rules.clone(),
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

    /// Whether the rule a reason belongs to is enforced; refusals no mode can waive are.
    pub fn enforces(&self, reason: crate::decision::Reason) -> bool {
        let Some(rule) = rule_of(reason) else {
            return true;
        };
        self.rule_modes.get(rule).copied().unwrap_or(self.mode) == Mode::Enforce
    }

    /// Applies a refusal, unless its rule runs in shadow mode: then the refusal is noted in the
    /// decision's log line and the request goes on.
    ///
    /// # Errors
    /// The refusal, when its rule is enforced.
    pub fn refuse(&self, error: ApiError, log: &mut DecisionLog) -> Result<(), ApiError> {
        let Some(rule) = rule_of(error.reason) else {
            return Err(error);
        };
        let mode = self.rule_modes.get(rule).copied().unwrap_or(self.mode);
        match mode {
            Mode::Enforce => Err(error),
            Mode::Shadow => {
                log.shadowed(error.reason);
                Ok(())
            }
        }
    }

    /// The keys one number's budgets, blocks and statistics go by.
    pub fn number_keys(&self, number: &PhoneNumber) -> NumberKeys {
        NumberKeys::of(&self.number_key, number)
    }
}

/// A number's keys: its own hash, its prefix's and its hundred-block's.
pub struct NumberKeys {
    pub hash: NumberHash,
    pub prefix: [u8; 32],
    pub range: [u8; 32],
    pub last_two: u8,
    pub calling_code: u16,
}

impl NumberKeys {
    pub fn of(number_key: &NumberKey, number: &PhoneNumber) -> NumberKeys {
        let (hundred, last_two) = number.hundred_block();
        NumberKeys {
            hash: number_key.hash_number(number),
            prefix: number_key.hash_labelled("prefix", number.prefix()),
            range: number_key.hash_labelled("range", hundred),
            last_two,
            calling_code: number.calling_code(),
        }
    }

    /// Every block key that refuses this number: the number, its hundred, its country and
    /// each of its prefixes.
    pub fn block_keys(&self, number: &PhoneNumber) -> Vec<(BlockKind, String)> {
        let e164 = number.e164();
        let shortest = 1 + self.calling_code.to_string().len();
        let mut keys = vec![
            (BlockKind::Number, hex::encode(self.hash.as_bytes())),
            (BlockKind::NumberRange, hex::encode(self.range)),
            (BlockKind::Country, self.calling_code.to_string()),
        ];
        keys.extend((shortest..e164.len()).map(|end| (BlockKind::Prefix, e164[..end].to_owned())));
        keys
    }
}

/// The leading 16 bytes of a keyed hash, as an in-memory budget's key.
pub fn limit_key_of(hash: &[u8; 32]) -> u128 {
    let mut head = [0u8; 16];
    head.copy_from_slice(&hash[..16]);
    u128::from_be_bytes(head)
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
