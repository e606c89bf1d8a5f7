//! `signal-gate demo`: the real gate on loopback, in front of both emulators, with a fresh
//! SQLite file and mixed traffic: legitimate users and the attacks operators see. It prints a
//! table per traffic class, writes the same figures as JSON, and fails when a legitimate user
//! does not verify or an attack gets more codes or guesses than the limits allow.

mod numbers;
mod report;
mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rand::distr::{Alphanumeric, SampleString};

use crate::clock::ManualClock;
use crate::configuration::Settings;
use crate::emulators::hcaptcha::{HcaptchaEmulator, TEST_SECRET, TEST_SITEKEY};
use crate::emulators::signal_server::SignalServerEmulator;
use crate::startup::Application;

pub use report::{ClassTally, Report};

/// The running pieces the traffic classes talk to.
pub struct World {
    pub gate_url: String,
    pub http: reqwest::Client,
    pub signal: SignalServerEmulator,
    pub hcaptcha: HcaptchaEmulator,
    pub clock: Arc<ManualClock>,
}

/// Runs the demo and writes the JSON report when asked.
///
/// # Errors
/// When a component cannot start, or the scenario's expectations fail.
pub async fn run(report_path: Option<&Path>) -> anyhow::Result<()> {
    let scratch = scratch_dir()?;
    let outcome = run_in(&scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let report = outcome?;
    print!("{}", report.table());
    if let Some(path) = report_path {
        std::fs::write(path, report.json()?)
            .with_context(|| format!("could not write the report to {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    let failures = report.failures();
    if !failures.is_empty() {
        anyhow::bail!("the demo found problems:\n  {}", failures.join("\n  "));
    }
    println!("every legitimate user verified; every attack stayed within the limits");
    Ok(())
}

async fn run_in(scratch: &Path) -> anyhow::Result<Report> {
    let signal = SignalServerEmulator::start()?;
    let hcaptcha = HcaptchaEmulator::start(TEST_SECRET, TEST_SITEKEY)?;
    let database = scratch.join("signal-gate.db");
    let settings = Settings::from_env(demo_vars(&signal, &hcaptcha, &database))?;
    let clock = Arc::new(ManualClock::starting_now());
    let app = Application::build_with_clock(settings, clock.clone()).await?;
    let gate_url = format!("http://127.0.0.1:{}", app.port());
    let metrics_url = format!("http://127.0.0.1:{}/metrics", app.admin_port());
    let server = tokio::spawn(app.run_until_stopped());
    let world = World {
        gate_url,
        http: reqwest::Client::new(),
        signal,
        hcaptcha,
        clock,
    };
    let mut report = traffic::run_all(&world).await;
    report.reasons = scrape_reasons(&world.http, &metrics_url).await;
    server.abort();
    Ok(report)
}

fn demo_vars(
    signal: &SignalServerEmulator,
    hcaptcha: &HcaptchaEmulator,
    database: &Path,
) -> HashMap<String, String> {
    let key = Alphanumeric.sample_string(&mut rand::rng(), 48);
    [
        ("LISTEN", "127.0.0.1:0".to_owned()),
        ("ADMIN__LISTEN", "127.0.0.1:0".to_owned()),
        ("WORKERS", "2".to_owned()),
        ("UPSTREAM__URL", signal.url()),
        ("HCAPTCHA__SECRET", TEST_SECRET.to_owned()),
        ("HCAPTCHA__SITEKEY", TEST_SITEKEY.to_owned()),
        ("HCAPTCHA__VERIFY_URL", hcaptcha.verify_url()),
        ("HCAPTCHA__HOSTNAMES", "localhost".to_owned()),
        ("DATABASE__URL", format!("sqlite://{}", database.display())),
        ("NUMBER_KEY", key),
        // The demo's clients all arrive through one loopback "proxy", each with its own address.
        ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        // This operator's users live in the demo's countries; codes go nowhere else.
        ("POLICY__ALLOW_COUNTRIES", numbers::COUNTRIES.join(",")),
    ]
    .into_iter()
    .map(|(name, value)| (format!("SIGNAL_GATE_{name}"), value))
    .collect()
}

/// Decisions by reason code, as the gate's own `/metrics` counts them.
async fn scrape_reasons(http: &reqwest::Client, url: &str) -> BTreeMap<String, u64> {
    let text = match http.get(url).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut reasons = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("signal_gate_decisions_total{"))
    {
        let reason = line
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let count = line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok());
        if let (Some(reason), Some(count)) = (reason, count) {
            *reasons.entry(reason.to_owned()).or_default() += count as u64;
        }
    }
    reasons
}

fn scratch_dir() -> anyhow::Result<PathBuf> {
    let name = format!(
        "signal-gate-demo-{}",
        Alphanumeric.sample_string(&mut rand::rng(), 8)
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).context("could not create a scratch directory")?;
    Ok(dir)
}
