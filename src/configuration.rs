//! Settings: the defaults in `config/default.toml`, overridden by `SIGNAL_GATE_*` variables.
//!
//! Every value is read as text and parsed here, so that a bad value stops start-up with a
//! message naming the variable the operator has to fix (`SIGNAL_GATE_LIMITS__REGISTER_PER_IP:
//! expected N/DURATION ...`). Secrets go straight into `secrecy` types and are never printed.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::abuse::{CountrySet, NumberTypes, RULE_NAMES};
use crate::alerts::AlertSettings;
use crate::domain::TrustedProxies;
use crate::limits::Rate;

/// The defaults, compiled in so that the binary runs from any directory.
const DEFAULTS: &str = include_str!("../config/default.toml");

/// The prefix every variable of ours carries.
pub const ENV_PREFIX: &str = "SIGNAL_GATE_";

/// The whole effective configuration of the gate.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub workers: usize,
    pub mode: Mode,
    pub trusted_proxies: TrustedProxies,
    pub number_key: SecretString,
    pub admin: AdminSettings,
    pub upstream: UpstreamSettings,
    pub hcaptcha: HcaptchaSettings,
    pub database: DatabaseSettings,
    pub limits: LimitSettings,
    pub policy: PolicySettings,
    pub abuse: AbuseSettings,
    /// Per-rule overrides of `mode`, by rule name.
    pub rules: HashMap<String, Mode>,
    pub alerts: AlertSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
}

/// What the decision log writes.
#[derive(Clone, Copy, Debug)]
pub struct LogSettings {
    /// Refusal lines a second per endpoint, reason and address block; 0 writes every one.
    pub refusal_lines_per_second: u32,
}

/// How long stored rows are kept.
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    pub interval: Duration,
    pub sends_max_age: Duration,
    pub sends_max_rows: u64,
}

/// Where codes may be sent.
#[derive(Clone, Debug)]
pub struct PolicySettings {
    pub allow_countries: CountrySet,
    pub deny_countries: CountrySet,
    pub deny_number_types: NumberTypes,
}

/// Abuse detection thresholds.
#[derive(Clone, Debug)]
pub struct AbuseSettings {
    pub sequential_threshold: u32,
    pub sequential_window: Duration,
    pub pumping_window: Duration,
    pub pumping_grace: Duration,
    pub pumping_ratio: f64,
    pub pumping_min_sends: u64,
    pub block_duration: Duration,
}

/// Whether refusals are enforced or only logged (issue: shadow mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

#[derive(Clone, Debug)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token: Option<SecretString>,
}

#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub url: Url,
    /// The captcha string the gate hands signal-server once it has checked the client's own.
    pub captcha: SecretString,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// What the gate does when hCaptcha cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Closed,
    Open,
}

#[derive(Clone, Debug)]
pub struct HcaptchaSettings {
    pub secret: SecretString,
    pub sitekey: String,
    pub verify_url: Url,
    /// Accepted `hostname` values; empty accepts any.
    pub hostnames: Vec<String>,
    pub timeout: Duration,
    pub on_error: OnError,
    pub token_lifetime: Duration,
    /// Highest accepted Enterprise risk score, when set.
    pub max_score: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    pub url: String,
    pub busy_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub register_per_ip: Rate,
    pub register_per_number: Rate,
    pub register_per_block: Rate,
    pub register_per_prefix: Rate,
    pub register_per_country: Rate,
    pub verify_per_ip: Rate,
    pub verify_per_number: Rate,
    pub wrong_codes_per_number: Rate,
    pub wrong_codes_per_session: u32,
    /// Waits between the codes sent to one number; `register_per_number` is the window and
    /// its budget.
    pub send_delays: Vec<Duration>,
    pub cache_capacity: u64,
}

/// A value that stops start-up, with the variable that holds it.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Reads the defaults and the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is missing or malformed.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::from_env(std::env::vars().collect())
    }

    /// Reads the defaults and the given variables instead of the process environment, so
    /// tests and the demo never touch global state.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_env(vars: HashMap<String, String>) -> Result<Settings, ConfigError> {
        let raw = RawSettings::read(vars)?;
        raw.parse()
    }

    /// `SIGNAL_GATE_*` variables that match no setting, most likely typos.
    pub fn unknown_variables(vars: impl Iterator<Item = String>) -> Vec<String> {
        let known = |suffix: &str| {
            KNOWN_VARIABLES.contains(&suffix)
                || suffix
                    .strip_prefix("RULES__")
                    .is_some_and(|rule| RULE_NAMES.contains(&rule.to_ascii_lowercase().as_str()))
        };
        vars.filter(|name| name.starts_with(ENV_PREFIX))
            .filter(|name| !known(&name[ENV_PREFIX.len()..]))
            .collect()
    }

    /// The effective configuration as `VARIABLE=value` lines, secrets masked (a URL's password
    /// included).
    pub fn describe(&self) -> Vec<String> {
        let set = |present: bool| if present { "<set>" } else { "<unset>" }.to_owned();
        let (l, h, a, p) = (&self.limits, &self.hcaptcha, &self.abuse, &self.policy);
        let d = |value: Duration| fmt_duration(value);
        let delays: Vec<String> = l.send_delays.iter().map(|v| d(*v)).collect();
        let lower = |value: &dyn fmt::Debug| format!("{value:?}").to_lowercase();
        let mut pairs: Vec<(String, String)> = [
            ("LISTEN", self.listen.to_string()),
            ("WORKERS", self.workers.to_string()),
            ("MODE", lower(&self.mode)),
            ("TRUSTED_PROXIES", self.trusted_proxies.to_string()),
            ("NUMBER_KEY", set(true)),
            ("ADMIN__LISTEN", self.admin.listen.to_string()),
            ("ADMIN__TOKEN", set(self.admin.token.is_some())),
            ("UPSTREAM__URL", without_password(&self.upstream.url)),
            ("UPSTREAM__CAPTCHA", set(true)),
            (
                "UPSTREAM__CONNECT_TIMEOUT",
                d(self.upstream.connect_timeout),
            ),
            ("UPSTREAM__TIMEOUT", d(self.upstream.timeout)),
            ("HCAPTCHA__SECRET", set(true)),
            ("HCAPTCHA__SITEKEY", h.sitekey.clone()),
            ("HCAPTCHA__VERIFY_URL", without_password(&h.verify_url)),
            ("HCAPTCHA__HOSTNAMES", h.hostnames.join(",")),
            ("HCAPTCHA__TIMEOUT", d(h.timeout)),
            ("HCAPTCHA__ON_ERROR", lower(&h.on_error)),
            ("HCAPTCHA__TOKEN_LIFETIME", d(h.token_lifetime)),
            (
                "HCAPTCHA__MAX_SCORE",
                h.max_score.map_or(String::new(), |s| s.to_string()),
            ),
            ("DATABASE__URL", self.database.url.clone()),
            ("DATABASE__BUSY_TIMEOUT", d(self.database.busy_timeout)),
            ("LIMITS__REGISTER_PER_IP", l.register_per_ip.to_string()),
            (
                "LIMITS__REGISTER_PER_NUMBER",
                l.register_per_number.to_string(),
            ),
            (
                "LIMITS__REGISTER_PER_BLOCK",
                l.register_per_block.to_string(),
            ),
            (
                "LIMITS__REGISTER_PER_PREFIX",
                l.register_per_prefix.to_string(),
            ),
            (
                "LIMITS__REGISTER_PER_COUNTRY",
                l.register_per_country.to_string(),
            ),
            ("LIMITS__VERIFY_PER_IP", l.verify_per_ip.to_string()),
            ("LIMITS__VERIFY_PER_NUMBER", l.verify_per_number.to_string()),
            (
                "LIMITS__WRONG_CODES_PER_NUMBER",
                l.wrong_codes_per_number.to_string(),
            ),
            (
                "LIMITS__WRONG_CODES_PER_SESSION",
                l.wrong_codes_per_session.to_string(),
            ),
            ("LIMITS__SEND_DELAYS", delays.join(",")),
            ("LIMITS__CACHE_CAPACITY", l.cache_capacity.to_string()),
            ("POLICY__ALLOW_COUNTRIES", p.allow_countries.to_string()),
            ("POLICY__DENY_COUNTRIES", p.deny_countries.to_string()),
            ("POLICY__DENY_NUMBER_TYPES", p.deny_number_types.to_string()),
            (
                "ABUSE__SEQUENTIAL_THRESHOLD",
                a.sequential_threshold.to_string(),
            ),
            ("ABUSE__SEQUENTIAL_WINDOW", d(a.sequential_window)),
            ("ABUSE__PUMPING_WINDOW", d(a.pumping_window)),
            ("ABUSE__PUMPING_GRACE", d(a.pumping_grace)),
            ("ABUSE__PUMPING_RATIO", a.pumping_ratio.to_string()),
            ("ABUSE__PUMPING_MIN_SENDS", a.pumping_min_sends.to_string()),
            ("ABUSE__BLOCK_DURATION", d(a.block_duration)),
            // A webhook URL often carries a token: shown as set or unset only.
            (
                "ALERTS__WEBHOOK_URL",
                set(self.alerts.webhook_url.is_some()),
            ),
            ("ALERTS__DEDUP_WINDOW", d(self.alerts.dedup_window)),
            (
                "ALERTS__CAPTCHA_FAILURES_PER_MINUTE",
                self.alerts.captcha_failures_per_minute.to_string(),
            ),
            (
                "ALERTS__UPSTREAM_ERRORS_PER_MINUTE",
                self.alerts.upstream_errors_per_minute.to_string(),
            ),
            ("RETENTION__INTERVAL", d(self.retention.interval)),
            ("RETENTION__SENDS_MAX_AGE", d(self.retention.sends_max_age)),
            (
                "RETENTION__SENDS_MAX_ROWS",
                self.retention.sends_max_rows.to_string(),
            ),
            (
                "LOG__REFUSAL_LINES_PER_SECOND",
                self.log.refusal_lines_per_second.to_string(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        let mut rules: Vec<_> = self.rules.iter().collect();
        rules.sort_by(|a, b| a.0.cmp(b.0));
        for (rule, mode) in rules {
            pairs.push((format!("RULES__{}", rule.to_ascii_uppercase()), lower(mode)));
        }
        pairs
            .into_iter()
            .map(|(name, value)| format!("{ENV_PREFIX}{name}={value}"))
            .collect()
    }
}

/// Every variable suffix we read, for the unknown-variable warning.
const KNOWN_VARIABLES: &[&str] = &[
    "LISTEN",
    "WORKERS",
    "MODE",
    "TRUSTED_PROXIES",
    "NUMBER_KEY",
    "ADMIN__LISTEN",
    "ADMIN__TOKEN",
    "UPSTREAM__URL",
    "UPSTREAM__CAPTCHA",
    "UPSTREAM__CONNECT_TIMEOUT",
    "UPSTREAM__TIMEOUT",
    "HCAPTCHA__SECRET",
    "HCAPTCHA__SITEKEY",
    "HCAPTCHA__VERIFY_URL",
    "HCAPTCHA__HOSTNAMES",
    "HCAPTCHA__TIMEOUT",
    "HCAPTCHA__ON_ERROR",
    "HCAPTCHA__TOKEN_LIFETIME",
    "DATABASE__URL",
    "DATABASE__BUSY_TIMEOUT",
    "LIMITS__REGISTER_PER_IP",
    "LIMITS__REGISTER_PER_NUMBER",
    "LIMITS__VERIFY_PER_IP",
    "LIMITS__VERIFY_PER_NUMBER",
    "LIMITS__WRONG_CODES_PER_NUMBER",
    "LIMITS__WRONG_CODES_PER_SESSION",
    "LIMITS__SEND_DELAYS",
    "LIMITS__CACHE_CAPACITY",
    "LIMITS__REGISTER_PER_BLOCK",
    "LIMITS__REGISTER_PER_PREFIX",
    "LIMITS__REGISTER_PER_COUNTRY",
    "HCAPTCHA__MAX_SCORE",
    "POLICY__ALLOW_COUNTRIES",
    "POLICY__DENY_COUNTRIES",
    "POLICY__DENY_NUMBER_TYPES",
    "ABUSE__SEQUENTIAL_THRESHOLD",
    "ABUSE__SEQUENTIAL_WINDOW",
    "ABUSE__PUMPING_WINDOW",
    "ABUSE__PUMPING_GRACE",
    "ABUSE__PUMPING_RATIO",
    "ABUSE__PUMPING_MIN_SENDS",
    "ABUSE__BLOCK_DURATION",
    "ALERTS__WEBHOOK_URL",
    "ALERTS__DEDUP_WINDOW",
    "ALERTS__CAPTCHA_FAILURES_PER_MINUTE",
    "ALERTS__UPSTREAM_ERRORS_PER_MINUTE",
    "RETENTION__INTERVAL",
    "RETENTION__SENDS_MAX_AGE",
    "RETENTION__SENDS_MAX_ROWS",
    "LOG__REFUSAL_LINES_PER_SECOND",
];

/// The settings as text, exactly as the sources gave them.
#[derive(Deserialize)]
struct RawSettings {
    listen: Option<String>,
    workers: Option<String>,
    mode: Option<String>,
    trusted_proxies: Option<String>,
    number_key: Option<SecretString>,
    admin: HashMap<String, String>,
    upstream: HashMap<String, String>,
    hcaptcha: HashMap<String, String>,
    database: HashMap<String, String>,
    limits: HashMap<String, String>,
    policy: HashMap<String, String>,
    abuse: HashMap<String, String>,
    #[serde(default)]
    rules: HashMap<String, String>,
    alerts: HashMap<String, String>,
    retention: HashMap<String, String>,
    log: HashMap<String, String>,
}

impl RawSettings {
    fn read(vars: HashMap<String, String>) -> Result<RawSettings, ConfigError> {
        let env = config::Environment::with_prefix("SIGNAL_GATE")
            .prefix_separator("_")
            .separator("__")
            .source(Some(vars));
        let built = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .add_source(env)
            .build()
            .map_err(|e| ConfigError {
                variable: "SIGNAL_GATE_*".into(),
                problem: format!("could not read the configuration: {e}"),
            })?;
        built.try_deserialize().map_err(|e| ConfigError {
            variable: "SIGNAL_GATE_*".into(),
            problem: format!("a section was given a plain value: {e}"),
        })
    }

    fn parse(self) -> Result<Settings, ConfigError> {
        let sections = Sections {
            admin: self.admin,
            upstream: self.upstream,
            hcaptcha: self.hcaptcha,
            database: self.database,
            limits: self.limits,
            policy: self.policy,
            abuse: self.abuse,
        };
        Ok(Settings {
            listen: parse_value("LISTEN", self.listen.as_deref())?,
            workers: parse_workers(self.workers.as_deref())?,
            mode: parse_mode(self.mode.as_deref())?,
            trusted_proxies: parse_value("TRUSTED_PROXIES", Some(or_empty(&self.trusted_proxies)))?,
            number_key: parse_number_key(self.number_key)?,
            admin: sections.admin()?,
            upstream: sections.upstream()?,
            hcaptcha: sections.hcaptcha()?,
            database: sections.database()?,
            limits: sections.limits()?,
            policy: sections.policy()?,
            abuse: sections.abuse()?,
            rules: parse_rules(self.rules)?,
            alerts: parse_alerts(&self.alerts)?,
            retention: parse_retention(&self.retention)?,
            log: LogSettings {
                refusal_lines_per_second: field(
                    &self.log,
                    "LOG__REFUSAL_LINES_PER_SECOND",
                    "refusal_lines_per_second",
                )?,
            },
        })
    }
}

fn or_empty(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

struct Sections {
    admin: HashMap<String, String>,
    upstream: HashMap<String, String>,
    hcaptcha: HashMap<String, String>,
    database: HashMap<String, String>,
    limits: HashMap<String, String>,
    policy: HashMap<String, String>,
    abuse: HashMap<String, String>,
}

fn parse_rules(raw: HashMap<String, String>) -> Result<HashMap<String, Mode>, ConfigError> {
    let mut rules = HashMap::new();
    for (rule, value) in raw {
        let suffix = format!("RULES__{}", rule.to_ascii_uppercase());
        if !RULE_NAMES.contains(&rule.as_str()) {
            let names = RULE_NAMES.join(", ");
            return Err(problem(
                &suffix,
                format!("names no rule; the rules are {names}"),
            ));
        }
        let mode = match value.trim() {
            "enforce" => Mode::Enforce,
            "shadow" => Mode::Shadow,
            other => {
                return Err(problem(
                    &suffix,
                    format!("expected enforce or shadow (got {other:?})"),
                ))
            }
        };
        rules.insert(rule, mode);
    }
    Ok(rules)
}

impl Sections {
    fn admin(&self) -> Result<AdminSettings, ConfigError> {
        let token = nonempty(&self.admin, "token").map(|t| SecretString::from(t.to_owned()));
        if let Some(token) = &token {
            if token.expose_secret().len() < 16 {
                return Err(problem("ADMIN__TOKEN", "must be at least 16 characters"));
            }
        }
        Ok(AdminSettings {
            listen: field(&self.admin, "ADMIN__LISTEN", "listen")?,
            token,
        })
    }

    fn upstream(&self) -> Result<UpstreamSettings, ConfigError> {
        let captcha = required(&self.upstream, "UPSTREAM__CAPTCHA", "captcha")?;
        Ok(UpstreamSettings {
            url: http_url(&self.upstream, "UPSTREAM__URL", "url")?,
            captcha: SecretString::from(captcha.to_owned()),
            connect_timeout: duration(
                &self.upstream,
                "UPSTREAM__CONNECT_TIMEOUT",
                "connect_timeout",
            )?,
            timeout: duration(&self.upstream, "UPSTREAM__TIMEOUT", "timeout")?,
        })
    }

    fn hcaptcha(&self) -> Result<HcaptchaSettings, ConfigError> {
        let section = &self.hcaptcha;
        let secret = required(section, "HCAPTCHA__SECRET", "secret")?;
        let hostnames = nonempty(section, "hostnames").unwrap_or("");
        Ok(HcaptchaSettings {
            secret: SecretString::from(secret.to_owned()),
            sitekey: parse_sitekey(required(section, "HCAPTCHA__SITEKEY", "sitekey")?)?,
            verify_url: http_url(section, "HCAPTCHA__VERIFY_URL", "verify_url")?,
            hostnames: split_list(hostnames).map(str::to_ascii_lowercase).collect(),
            timeout: duration(section, "HCAPTCHA__TIMEOUT", "timeout")?,
            on_error: parse_on_error(required(section, "HCAPTCHA__ON_ERROR", "on_error")?)?,
            token_lifetime: duration(section, "HCAPTCHA__TOKEN_LIFETIME", "token_lifetime")?,
            max_score: optional_fraction(section, "HCAPTCHA__MAX_SCORE", "max_score")?,
        })
    }

    fn database(&self) -> Result<DatabaseSettings, ConfigError> {
        let url = required(&self.database, "DATABASE__URL", "url")?;
        if !url.starts_with("sqlite:") {
            return Err(problem("DATABASE__URL", "must be a sqlite: URL"));
        }
        Ok(DatabaseSettings {
            url: url.to_owned(),
            busy_timeout: duration(&self.database, "DATABASE__BUSY_TIMEOUT", "busy_timeout")?,
        })
    }

    fn limits(&self) -> Result<LimitSettings, ConfigError> {
        let l = &self.limits;
        let per_session: u32 = field(
            l,
            "LIMITS__WRONG_CODES_PER_SESSION",
            "wrong_codes_per_session",
        )?;
        if per_session == 0 {
            return Err(problem(
                "LIMITS__WRONG_CODES_PER_SESSION",
                "must be at least 1",
            ));
        }
        let capacity: u64 = field(l, "LIMITS__CACHE_CAPACITY", "cache_capacity")?;
        if capacity < 1000 {
            return Err(problem("LIMITS__CACHE_CAPACITY", "must be at least 1000"));
        }
        Ok(LimitSettings {
            register_per_ip: field(l, "LIMITS__REGISTER_PER_IP", "register_per_ip")?,
            register_per_number: field(l, "LIMITS__REGISTER_PER_NUMBER", "register_per_number")?,
            register_per_block: field(l, "LIMITS__REGISTER_PER_BLOCK", "register_per_block")?,
            register_per_prefix: field(l, "LIMITS__REGISTER_PER_PREFIX", "register_per_prefix")?,
            register_per_country: field(l, "LIMITS__REGISTER_PER_COUNTRY", "register_per_country")?,
            verify_per_ip: field(l, "LIMITS__VERIFY_PER_IP", "verify_per_ip")?,
            verify_per_number: field(l, "LIMITS__VERIFY_PER_NUMBER", "verify_per_number")?,
            wrong_codes_per_number: field(
                l,
                "LIMITS__WRONG_CODES_PER_NUMBER",
                "wrong_codes_per_number",
            )?,
            wrong_codes_per_session: per_session,
            send_delays: duration_list(l, "LIMITS__SEND_DELAYS", "send_delays")?,
            cache_capacity: capacity,
        })
    }
}

impl Sections {
    fn policy(&self) -> Result<PolicySettings, ConfigError> {
        let p = &self.policy;
        let text = |key: &str| nonempty(p, key).unwrap_or("");
        Ok(PolicySettings {
            allow_countries: parse_value("POLICY__ALLOW_COUNTRIES", Some(text("allow_countries")))?,
            deny_countries: parse_value("POLICY__DENY_COUNTRIES", Some(text("deny_countries")))?,
            deny_number_types: parse_value(
                "POLICY__DENY_NUMBER_TYPES",
                Some(text("deny_number_types")),
            )?,
        })
    }

    fn abuse(&self) -> Result<AbuseSettings, ConfigError> {
        let a = &self.abuse;
        let threshold: u32 = field(a, "ABUSE__SEQUENTIAL_THRESHOLD", "sequential_threshold")?;
        if !(2..=100).contains(&threshold) {
            return Err(problem(
                "ABUSE__SEQUENTIAL_THRESHOLD",
                "must be from 2 to 100",
            ));
        }
        let ratio = optional_fraction(a, "ABUSE__PUMPING_RATIO", "pumping_ratio")?
            .ok_or_else(|| problem("ABUSE__PUMPING_RATIO", "is required and not set"))?;
        Ok(AbuseSettings {
            sequential_threshold: threshold,
            sequential_window: duration(a, "ABUSE__SEQUENTIAL_WINDOW", "sequential_window")?,
            pumping_window: duration(a, "ABUSE__PUMPING_WINDOW", "pumping_window")?,
            pumping_grace: duration(a, "ABUSE__PUMPING_GRACE", "pumping_grace")?,
            pumping_ratio: ratio,
            pumping_min_sends: field(a, "ABUSE__PUMPING_MIN_SENDS", "pumping_min_sends")?,
            block_duration: duration(a, "ABUSE__BLOCK_DURATION", "block_duration")?,
        })
    }
}

fn parse_alerts(section: &HashMap<String, String>) -> Result<AlertSettings, ConfigError> {
    let webhook_url = match nonempty(section, "webhook_url") {
        Some(_) => Some(http_url(section, "ALERTS__WEBHOOK_URL", "webhook_url")?),
        None => None,
    };
    Ok(AlertSettings {
        webhook_url,
        dedup_window: duration(section, "ALERTS__DEDUP_WINDOW", "dedup_window")?,
        captcha_failures_per_minute: positive(
            section,
            "ALERTS__CAPTCHA_FAILURES_PER_MINUTE",
            "captcha_failures_per_minute",
        )?,
        upstream_errors_per_minute: positive(
            section,
            "ALERTS__UPSTREAM_ERRORS_PER_MINUTE",
            "upstream_errors_per_minute",
        )?,
    })
}

fn parse_retention(section: &HashMap<String, String>) -> Result<RetentionSettings, ConfigError> {
    Ok(RetentionSettings {
        interval: duration(section, "RETENTION__INTERVAL", "interval")?,
        sends_max_age: duration(section, "RETENTION__SENDS_MAX_AGE", "sends_max_age")?,
        sends_max_rows: u64::from(positive(
            section,
            "RETENTION__SENDS_MAX_ROWS",
            "sends_max_rows",
        )?),
    })
}

/// A whole number of at least one.
fn positive(
    section: &HashMap<String, String>,
    suffix: &str,
    key: &str,
) -> Result<u32, ConfigError> {
    let value: u32 = field(section, suffix, key)?;
    if value == 0 {
        return Err(problem(suffix, "must be at least 1"));
    }
    Ok(value)
}

/// A number from 0 to 1, or nothing when unset.
fn optional_fraction(
    section: &HashMap<String, String>,
    suffix: &str,
    key: &str,
) -> Result<Option<f64>, ConfigError> {
    let Some(text) = nonempty(section, key) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(Some(value)),
        _ => Err(problem(
            suffix,
            format!("expected a number from 0 to 1 (got {text:?})"),
        )),
    }
}

fn problem(suffix: &str, text: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: format!("{ENV_PREFIX}{suffix}"),
        problem: text.into(),
    }
}

fn nonempty<'a>(section: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    section.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn required<'a>(
    section: &'a HashMap<String, String>,
    suffix: &str,
    key: &str,
) -> Result<&'a str, ConfigError> {
    nonempty(section, key).ok_or_else(|| problem(suffix, "is required and not set"))
}

/// Parses one value with its `FromStr`, naming the variable on failure.
fn parse_value<T>(suffix: &str, value: Option<&str>) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    let value = value
        .map(str::trim)
        .ok_or_else(|| problem(suffix, "is required and not set"))?;
    value
        .parse()
        .map_err(|e| problem(suffix, format!("{e} (got {value:?})")))
}

fn field<T>(section: &HashMap<String, String>, suffix: &str, key: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    parse_value(suffix, Some(required(section, suffix, key)?))
}

fn duration(
    section: &HashMap<String, String>,
    suffix: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    let text = required(section, suffix, key)?;
    let value = parse_duration(text).map_err(|e| problem(suffix, e))?;
    if value.is_zero() {
        return Err(problem(suffix, "must be longer than zero"));
    }
    Ok(value)
}

fn duration_list(
    section: &HashMap<String, String>,
    suffix: &str,
    key: &str,
) -> Result<Vec<Duration>, ConfigError> {
    let text = nonempty(section, key).unwrap_or("");
    split_list(text)
        .map(|item| parse_duration(item).map_err(|e| problem(suffix, e)))
        .collect()
}

fn http_url(
    section: &HashMap<String, String>,
    suffix: &str,
    key: &str,
) -> Result<Url, ConfigError> {
    let text = required(section, suffix, key)?.trim();
    // A URL may carry a password: errors show it masked, or not at all when it does not parse.
    let url = Url::parse(text).map_err(|e| {
        problem(
            suffix,
            format!("{e} (the value is not shown: it may hold a password)"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        let shown = without_password(&url);
        return Err(problem(
            suffix,
            format!("must be an http(s) URL with a host (got {shown})"),
        ));
    }
    Ok(url)
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Parses `90s`, `10m`, `1h`, `1d`, or any form `humantime` reads.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("expected a duration like 30s, 10m, 1h or 1d: {e} (got {text:?})"))
}

/// The URL with any password in it replaced by `***`.
fn without_password(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() && shown.set_password(Some("***")).is_err() {
        return "<set>".to_owned();
    }
    shown.to_string()
}

/// Writes a duration the way the configuration reads it.
pub fn fmt_duration(value: Duration) -> String {
    let millis = value.as_millis();
    let units = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    match units
        .iter()
        .find(|(size, _)| millis >= *size && millis.is_multiple_of(*size))
    {
        Some((size, unit)) => format!("{}{unit}", millis / size),
        None => format!("{millis}ms"),
    }
}

fn parse_workers(value: Option<&str>) -> Result<usize, ConfigError> {
    let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=512).contains(&n) => Ok(n),
        _ => Err(problem(
            "WORKERS",
            format!("expected a whole number from 1 to 512 (got {text:?})"),
        )),
    }
}

fn parse_mode(value: Option<&str>) -> Result<Mode, ConfigError> {
    match value.map(str::trim) {
        None | Some("enforce") => Ok(Mode::Enforce),
        Some("shadow") => Ok(Mode::Shadow),
        Some(other) => Err(problem(
            "MODE",
            format!("expected enforce or shadow (got {other:?})"),
        )),
    }
}

fn parse_on_error(value: &str) -> Result<OnError, ConfigError> {
    match value {
        "closed" => Ok(OnError::Closed),
        "open" => Ok(OnError::Open),
        other => Err(problem(
            "HCAPTCHA__ON_ERROR",
            format!("expected closed or open (got {other:?})"),
        )),
    }
}

fn parse_sitekey(value: &str) -> Result<String, ConfigError> {
    // hCaptcha site keys are UUIDs, and the siteverify client refuses anything else.
    let groups: Vec<&str> = value.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    if !shape
        || !groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(problem(
            "HCAPTCHA__SITEKEY",
            format!("expected a UUID (got {value:?})"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

fn parse_number_key(value: Option<SecretString>) -> Result<SecretString, ConfigError> {
    let key = value.ok_or_else(|| problem("NUMBER_KEY", "is required and not set"))?;
    if key.expose_secret().trim().len() < 32 {
        return Err(problem(
            "NUMBER_KEY",
            "must be at least 32 characters of random text",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required_vars() -> HashMap<String, String> {
        [
            ("SIGNAL_GATE_UPSTREAM__URL", "http://127.0.0.1:8081"),
            (
                "SIGNAL_GATE_HCAPTCHA__SECRET",
                "0x0000000000000000000000000000000000000000",
            ),
            (
                "SIGNAL_GATE_HCAPTCHA__SITEKEY",
                "10000000-ffff-ffff-ffff-000000000001",
            ),
            (
                "SIGNAL_GATE_HCAPTCHA__VERIFY_URL",
                "http://127.0.0.1:8082/siteverify",
            ),
            (
                "SIGNAL_GATE_NUMBER_KEY",
                "a-test-key-that-is-long-enough-to-pass",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn the_defaults_match_the_design() {
        let settings = Settings::from_env(required_vars()).expect("valid settings");
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(settings.limits.register_per_ip.to_string(), "10/1h");
        assert_eq!(settings.limits.register_per_number.to_string(), "5/1d");
        assert_eq!(settings.limits.verify_per_ip.to_string(), "60/1h");
        assert_eq!(settings.limits.wrong_codes_per_number.to_string(), "5/1h");
        assert_eq!(settings.database.url, "sqlite://data/signal-gate.db");
        assert_eq!(settings.hcaptcha.on_error, OnError::Closed);
        assert!(settings.trusted_proxies.is_empty());
    }

    #[test]
    fn a_password_in_a_url_is_not_shown() {
        let mut vars = required_vars();
        vars.insert(
            "SIGNAL_GATE_UPSTREAM__URL".to_owned(),
            "http://gate:S3cretPw@127.0.0.1:8081".to_owned(),
        );
        let settings = Settings::from_env(vars).expect("valid settings");
        let shown = settings.describe().join("\n");
        assert!(!shown.contains("S3cretPw"), "{shown}");
        assert!(
            shown.contains("UPSTREAM__URL=http://gate:***@127.0.0.1:8081"),
            "{shown}"
        );
    }

    #[test]
    fn a_url_that_is_refused_is_not_echoed_with_its_password() {
        let bad = [
            ("SIGNAL_GATE_UPSTREAM__URL", "http://u:Pw1@127.0.0.1:99999"),
            ("SIGNAL_GATE_UPSTREAM__URL", "ftp://u:Pw1@127.0.0.1/"),
            ("SIGNAL_GATE_HCAPTCHA__VERIFY_URL", "http://u:Pw1@[::1/"),
            (
                "SIGNAL_GATE_ALERTS__WEBHOOK_URL",
                "ftp://u:Pw1@127.0.0.1/hook",
            ),
        ];
        for (name, value) in bad {
            let mut vars = required_vars();
            vars.insert(name.to_owned(), value.to_owned());
            let error = Settings::from_env(vars).expect_err("refused");
            assert!(!error.to_string().contains("Pw1"), "{error}");
            assert_eq!(error.variable, name, "{error}");
        }
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for name in required_vars().keys() {
            let mut vars = required_vars();
            vars.remove(name);
            let error = Settings::from_env(vars).expect_err("must fail");
            assert_eq!(&error.variable, name, "{error}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases = [
            ("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", "ten per hour"),
            ("SIGNAL_GATE_LIMITS__VERIFY_PER_IP", "0/1h"),
            ("SIGNAL_GATE_LISTEN", "not an address"),
            ("SIGNAL_GATE_WORKERS", "0"),
            ("SIGNAL_GATE_TRUSTED_PROXIES", "10.0.0.0/8,banana"),
            ("SIGNAL_GATE_UPSTREAM__URL", "ftp://127.0.0.1/"),
            ("SIGNAL_GATE_UPSTREAM__TIMEOUT", "soon"),
            ("SIGNAL_GATE_HCAPTCHA__ON_ERROR", "maybe"),
            ("SIGNAL_GATE_NUMBER_KEY", "short"),
            ("SIGNAL_GATE_MODE", "loud"),
            ("SIGNAL_GATE_HCAPTCHA__SITEKEY", "not-a-uuid"),
            ("SIGNAL_GATE_POLICY__DENY_COUNTRIES", "GB,Narnia"),
            (
                "SIGNAL_GATE_POLICY__DENY_NUMBER_TYPES",
                "premium_rate,expensive",
            ),
            ("SIGNAL_GATE_ABUSE__PUMPING_RATIO", "1.5"),
            ("SIGNAL_GATE_RULES__SMS_PUMPING", "maybe"),
            ("SIGNAL_GATE_RULES__NO_SUCH_RULE", "shadow"),
            ("SIGNAL_GATE_HCAPTCHA__MAX_SCORE", "high"),
            ("SIGNAL_GATE_ALERTS__WEBHOOK_URL", "not a url"),
            ("SIGNAL_GATE_ALERTS__UPSTREAM_ERRORS_PER_MINUTE", "0"),
            ("SIGNAL_GATE_RETENTION__INTERVAL", "never"),
            ("SIGNAL_GATE_LIMITS__SEND_DELAYS", "1m,later"),
        ];
        for (name, value) in cases {
            let mut vars = required_vars();
            vars.insert(name.to_owned(), value.to_owned());
            let error = Settings::from_env(vars).expect_err(name);
            assert_eq!(error.variable, name, "{error}");
        }
    }

    #[test]
    fn debug_output_masks_every_secret() {
        let mut vars = required_vars();
        vars.insert(
            "SIGNAL_GATE_ADMIN__TOKEN".into(),
            "admin-token-that-is-secret".into(),
        );
        let settings = Settings::from_env(vars).expect("valid settings");
        let shown = format!("{settings:?}\n{}", settings.describe().join("\n"));
        for secret in [
            "0x0000000000000000000000000000000000000000",
            "long-enough-to-pass",
        ] {
            assert!(!shown.contains(secret), "secret leaked: {secret}");
        }
        assert!(!shown.contains("admin-token-that-is-secret"));
        assert!(!shown.contains("signal-hcaptcha.noop"));
    }

    #[test]
    fn every_described_variable_is_known_and_every_known_one_described() {
        let mut vars = required_vars();
        vars.insert("SIGNAL_GATE_RULES__SMS_PUMPING".into(), "shadow".into());
        let settings = Settings::from_env(vars).expect("valid settings");
        let described: Vec<String> = settings
            .describe()
            .iter()
            .map(|line| line.split('=').next().unwrap_or_default().to_owned())
            .collect();
        let unknown = Settings::unknown_variables(described.iter().cloned());
        assert!(unknown.is_empty(), "described but unknown: {unknown:?}");
        for known in KNOWN_VARIABLES {
            assert!(
                described.contains(&format!("{ENV_PREFIX}{known}")),
                "{known} not described"
            );
        }
    }

    #[test]
    fn unknown_variables_are_reported() {
        let vars = [
            "SIGNAL_GATE_LIMITS__REGISTER_PER_IPP",
            "SIGNAL_GATE_LISTEN",
            "HOME",
        ];
        let unknown = Settings::unknown_variables(vars.iter().map(|v| v.to_string()));
        assert_eq!(
            unknown,
            vec!["SIGNAL_GATE_LIMITS__REGISTER_PER_IPP".to_owned()]
        );
    }
}
