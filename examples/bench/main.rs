//! The gate's benchmark, run by `scripts/bench.sh` after a release build: every figure of
//! docs/benchmarks.md from one run on this machine, each comparison side by side, alternated
//! and repeated, and a table of medians and ratios at the end.
//!
//! `bench [--rounds N] [--seconds S] [--keys K] [--only PART]`: N rounds of S-second wrk runs
//! per target (default 5 and 5), K distinct addresses for the memory run (default 1,000,000),
//! and PART (floods, memory, latency, storage, startup) to run one part alone.
//! Servers run pinned to core 0, wrk to core 1; scripts/bench.sh pins this process to core 1.

mod nginx;
mod probes;
mod processes;
mod wrk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use signal_gate::emulators::hcaptcha::{HcaptchaEmulator, TEST_SECRET, TEST_SITEKEY};
use signal_gate::emulators::signal_server::SignalServerEmulator;

use processes::{free_port, pinned, status_kib, Server, WorkDir, SERVER_CORE};
use wrk::{Scripts, WrkReport};

const CONNECTIONS: u32 = 64;
/// The decision log's bound, as deploy/signal-gate.service sets it.
const REFUSAL_LINES: &str = "10";
/// Budgets a flood of new addresses fills: register per address and per address block, each
/// with its cache of limited keys beside it.
const FLOODED_CACHES: u64 = 4;
/// The target for memory per tracked key.
const TARGET_BYTES_PER_KEY: u64 = 300;

struct Options {
    rounds: usize,
    seconds: u64,
    keys: u64,
    /// One part only: floods, memory, latency, storage or startup.
    only: Option<String>,
}

impl Options {
    fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }
}

const PARTS: [&str; 5] = ["floods", "memory", "latency", "storage", "startup"];

fn options() -> Options {
    let mut options = Options {
        rounds: 5,
        seconds: 5,
        keys: 1_000_000,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        if pair[0] == "--only" && pair.get(1).is_some_and(|p| PARTS.contains(&p.as_str())) {
            options.only = pair.get(1).cloned();
            continue;
        }
        match (pair[0].as_str(), value) {
            ("--rounds", Some(n)) if n > 0 => options.rounds = n as usize,
            ("--seconds", Some(n)) if n > 0 => options.seconds = n,
            ("--keys", Some(n)) if n > 0 => options.keys = n,
            _ => {
                eprintln!(
                    "usage: bench [--rounds N] [--seconds S] [--keys K] [--only {}]",
                    PARTS.join("|")
                );
                std::process::exit(2);
            }
        }
    }
    options
}

/// Paths of what scripts/bench.sh built.
struct Binaries {
    gate: PathBuf,
    bare: PathBuf,
}

fn binaries() -> Binaries {
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release");
    let binaries = Binaries {
        gate: release.join("signal-gate"),
        bare: release.join("examples/bare_actix"),
    };
    for path in [&binaries.gate, &binaries.bare] {
        assert!(
            path.exists(),
            "{} is missing: run scripts/bench.sh",
            path.display()
        );
    }
    binaries
}

/// The emulators the gate talks to, in this process (on the client core).
struct Emulators {
    signal: SignalServerEmulator,
    hcaptcha: HcaptchaEmulator,
}

/// A running gate and the ports it answers on.
struct Gate {
    server: Server,
    url: String,
    admin_url: String,
    started_in: Duration,
    log: PathBuf,
}

fn start_gate(
    name: &'static str,
    binaries: &Binaries,
    work: &WorkDir,
    emulators: &Emulators,
    extra: &[(&str, &str)],
) -> Gate {
    let (port, admin) = (free_port(), free_port());
    let database = work.join(&format!("{name}-{port}.db"));
    let mut command = pinned(SERVER_CORE, &binaries.gate);
    command
        .arg("serve")
        .env("SIGNAL_GATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("SIGNAL_GATE_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .env("SIGNAL_GATE_WORKERS", "1")
        .env("SIGNAL_GATE_UPSTREAM__URL", emulators.signal.url())
        .env("SIGNAL_GATE_HCAPTCHA__SECRET", TEST_SECRET)
        .env("SIGNAL_GATE_HCAPTCHA__SITEKEY", TEST_SITEKEY)
        .env(
            "SIGNAL_GATE_HCAPTCHA__VERIFY_URL",
            emulators.hcaptcha.verify_url(),
        )
        .env(
            "SIGNAL_GATE_NUMBER_KEY",
            "a benchmark number key, long enough",
        )
        .env(
            "SIGNAL_GATE_DATABASE__URL",
            format!("sqlite://{}", database.display()),
        )
        .env("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", nginx::GATE_RULE)
        .env("SIGNAL_GATE_LOG__REFUSAL_LINES_PER_SECOND", REFUSAL_LINES)
        .envs(extra.iter().copied());
    let started = Instant::now();
    let log = work.join(&format!("{name}-{port}.log"));
    let mut server = Server::start(name, command, &log);
    let admin_url = format!("http://127.0.0.1:{admin}");
    server.wait_for_port(admin);
    wait_until_ready(&admin_url);
    Gate {
        server,
        url: format!("http://127.0.0.1:{port}"),
        admin_url,
        started_in: started.elapsed(),
        log,
    }
}

/// Polls `/readyz` with a bare HTTP/1.0 request until it answers 200.
fn wait_until_ready(admin_url: &str) {
    use std::io::{Read, Write};
    let address = admin_url.trim_start_matches("http://");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the gate at {admin_url} was not ready within 30 s");
}

/// Gates and the two references, for the floods.
struct FloodTargets {
    gate_one: Gate,
    gate_many: Gate,
    _nginx: Server,
    nginx_one: String,
    nginx_many: String,
    _bare: Server,
    bare: String,
}

fn start_flood_targets(binaries: &Binaries, work: &WorkDir, emulators: &Emulators) -> FloodTargets {
    let gate_one = start_gate("gate-one-address", binaries, work, emulators, &[]);
    let trusted = [("SIGNAL_GATE_TRUSTED_PROXIES", "127.0.0.1/32")];
    let gate_many = start_gate("gate-many-addresses", binaries, work, emulators, &trusted);

    let bare_port = free_port();
    let mut command = pinned(SERVER_CORE, &binaries.bare);
    command.arg(format!("127.0.0.1:{bare_port}")).arg("1");
    let mut bare = Server::start("bare actix-web", command, &work.join("bare.log"));
    bare.wait_for_port(bare_port);

    let (one, many) = (free_port(), free_port());
    let dir = work.join("nginx");
    nginx::write_config(&dir, one, many, bare_port);
    let mut command = pinned(SERVER_CORE, Path::new(&nginx_binary()));
    command
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"]);
    let mut nginx = Server::start("nginx", command, &work.join("nginx.log"));
    nginx.wait_for_port(one);
    nginx.wait_for_port(many);
    FloodTargets {
        gate_one,
        gate_many,
        _nginx: nginx,
        nginx_one: format!("http://127.0.0.1:{one}"),
        nginx_many: format!("http://127.0.0.1:{many}"),
        _bare: bare,
        bare: format!("http://127.0.0.1:{bare_port}"),
    }
}

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("nginx")
        .to_owned()
}

/// Median requests a second of each target, and the smallest share of refusals seen.
struct FloodResult {
    names: Vec<&'static str>,
    medians: Vec<f64>,
    runs: Vec<Vec<WrkReport>>,
}

/// Runs every target `rounds` times, rotating which goes first, after a one-second warm-up.
fn flood(
    targets: &[(&'static str, String)],
    script: &str,
    options: &Options,
    offset: &mut u64,
) -> FloodResult {
    let url = |base: &String| format!("{base}/v1/register");
    for (_, base) in targets {
        let warm = wrk::run(&url(base), script, 1, CONNECTIONS, *offset);
        *offset += warm.requests + 1;
    }
    let mut runs = vec![Vec::new(); targets.len()];
    for round in 0..options.rounds {
        for step in 0..targets.len() {
            let index = (round + step) % targets.len();
            let report = wrk::run(
                &url(&targets[index].1),
                script,
                options.seconds,
                CONNECTIONS,
                *offset,
            );
            *offset += report.requests + 1;
            runs[index].push(report);
        }
    }
    let medians = runs
        .iter()
        .map(|reports| median(reports.iter().map(|r| r.per_second).collect()))
        .collect();
    FloodResult {
        names: targets.iter().map(|(name, _)| *name).collect(),
        medians,
        runs,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_flood(title: &str, result: &FloodResult) {
    println!("\n### {title}\n");
    println!("| target | median req/s | runs (req/s) | refused | socket errors | gate / this |");
    println!("|---|---:|---|---:|---:|---:|");
    let gate = result.medians[0];
    for (index, name) in result.names.iter().enumerate() {
        let runs = &result.runs[index];
        let list: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.per_second))
            .collect();
        let requests: u64 = runs.iter().map(|r| r.requests).sum();
        let refused: u64 = runs.iter().map(|r| r.refused).sum();
        let errors: u64 = runs.iter().map(|r| r.socket_errors).sum();
        let share = 100.0 * refused as f64 / requests.max(1) as f64;
        let ratio = gate / result.medians[index].max(1.0);
        println!(
            "| {name} | {:.0} | {} | {share:.2}% | {errors} | {ratio:.2}x |",
            result.medians[index],
            list.join(", "),
        );
    }
}

async fn metrics(admin_url: &str) -> String {
    reqwest::get(format!("{admin_url}/metrics"))
        .await
        .expect("the gate's metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// Decisions so far by endpoint and reason, from the gate's own metrics.
async fn decisions(admin_url: &str) -> BTreeMap<String, u64> {
    let text = metrics(admin_url).await;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("signal_gate_decisions_total{"))
    {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_owned())
        };
        let count = line
            .split_whitespace()
            .last()
            .and_then(|n| n.parse::<f64>().ok());
        if let (Some(endpoint), Some(reason), Some(count)) =
            (label("endpoint"), label("reason"), count)
        {
            *counts.entry(format!("{endpoint} {reason}")).or_default() += count as u64;
        }
    }
    counts
}

/// Tracked keys over all budgets, from the gate's own metrics.
async fn tracked_keys(admin_url: &str) -> u64 {
    let text = metrics(admin_url).await;
    text.lines()
        .filter(|line| line.starts_with("signal_gate_tracked_keys"))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .map(|keys| keys as u64)
        .sum()
}

/// Floods a fresh gate from `keys` distinct addresses; resident memory before and after.
async fn memory_run(
    binaries: &Binaries,
    work: &WorkDir,
    emulators: &Emulators,
    scripts: &Scripts,
    keys: u64,
) {
    let capacity = 200_000u64;
    let trusted = [("SIGNAL_GATE_TRUSTED_PROXIES", "127.0.0.1/32")];
    let gate = start_gate("gate-memory", binaries, work, emulators, &trusted);
    let pid = gate.server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = status_kib(pid, "VmRSS:");
    let (mut sent, started) = (0u64, Instant::now());
    let url = format!("{}/v1/register", gate.url);
    while sent < keys {
        let report = wrk::run(&url, &scripts.many_addresses, 5, CONNECTIONS, sent);
        assert!(report.requests > 0, "wrk sent nothing to the gate");
        sent += report.requests;
    }
    let elapsed = started.elapsed();
    let tracked = tracked_keys(&gate.admin_url).await;
    let (after, peak) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let per_key = (after.saturating_sub(idle) * 1024) / tracked.max(1);
    let ceiling_kib = idle + FLOODED_CACHES * capacity * TARGET_BYTES_PER_KEY / 1024;
    println!("\n### Memory under a flood of new addresses\n");
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| requests, each from a new address (IPv4 and IPv6 /64) | {sent} |");
    println!(
        "| rate | {:.0} req/s |",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!("| keys tracked by all budgets at the end | {tracked} |");
    println!(
        "| resident before / after / peak | {} / {} / {} MiB |",
        idle / 1024,
        after / 1024,
        peak / 1024
    );
    println!(
        "| resident growth per tracked key | {per_key} bytes (target {TARGET_BYTES_PER_KEY}) |"
    );
    println!(
        "| ceiling for capacity {capacity}: idle + {FLOODED_CACHES} caches x capacity x \
         {TARGET_BYTES_PER_KEY} B | {} MiB (peak {}) |",
        ceiling_kib / 1024,
        if peak <= ceiling_kib {
            "within"
        } else {
            "OVER"
        }
    );
}

async fn start_up(binaries: &Binaries, work: &WorkDir, emulators: &Emulators) {
    let mut times = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..5 {
        let gate = start_gate("gate-start", binaries, work, emulators, &[]);
        times.push(gate.started_in.as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(status_kib(gate.server.pid(), "VmRSS:") as f64 / 1024.0);
    }
    println!("\n### Start-up and idle memory (5 starts, each on a new database)\n");
    println!("| figure | median | all | target |");
    println!("|---|---:|---|---:|");
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| start to ready (/readyz 200) | {:.1} ms | {} | < 200 ms |",
        median(times.clone()),
        list(&times)
    );
    println!(
        "| idle resident memory | {:.1} MiB | {} | < 30 MiB |",
        median(idle.clone()),
        list(&idle)
    );
}

async fn latency(binaries: &Binaries, work: &WorkDir, emulators: &Emulators) {
    let gate = start_gate("gate-latency", binaries, work, emulators, &OPEN_LIMITS);
    let (through, direct) = probes::approved_latency(
        &gate.url,
        &emulators.signal.url(),
        &emulators.hcaptcha,
        2000,
    )
    .await;
    println!("\n### Time an approved register spends in the gate (2,000 each, alternated)\n");
    println!("| | p50 | p99 |");
    println!("|---|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (name, times) in [
        ("through the gate", &through),
        ("the same calls direct", &direct),
    ] {
        let (p50, p99) = (
            probes::percentile(times, 0.5),
            probes::percentile(times, 0.99),
        );
        println!("| {name} | {:.0} us | {:.0} us |", us(p50), us(p99));
    }
    let added = |p| us(probes::percentile(&through, p)) - us(probes::percentile(&direct, p));
    println!(
        "| difference: the gate and its extra hop | {:.0} us | {:.0} us |",
        added(0.5),
        added(0.99)
    );
    let own = own_time(&gate.log);
    println!(
        "| the gate's own time, from its decision lines (`gate_us`; target p99 < 1000 us) \
         | {:.0} us | {:.0} us |",
        us(probes::percentile(&own, 0.5)),
        us(probes::percentile(&own, 0.99))
    );
}

/// `gate_us` of every approved register in a gate's log, sorted: the time the gate spent on
/// it apart from its waits for hCaptcha and signal-server.
fn own_time(log: &Path) -> Vec<Duration> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut times: Vec<Duration> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["endpoint"] == "register" && line["reason"] == "approved")
        .filter_map(|line| line["gate_us"].as_u64())
        .map(Duration::from_micros)
        .collect();
    times.sort();
    times
}

async fn storage(binaries: &Binaries, work: &WorkDir, emulators: &Emulators) {
    let gate = start_gate("gate-storage", binaries, work, emulators, &OPEN_LIMITS);
    let before = decisions(&gate.admin_url).await;
    let run =
        probes::storage_decisions(&gate.url, &emulators.hcaptcha, 64, Duration::from_secs(10))
            .await;
    let after = decisions(&gate.admin_url).await;
    println!("\n### Decisions that read or write SQLite, 64 concurrent clients, 10 s\n");
    println!("| figure | value |");
    println!("|---|---:|");
    let rate = run.decisions as f64 / run.elapsed.as_secs_f64();
    println!("| decisions a second (target 5,000) | {rate:.0} |");
    println!(
        "| storage errors or 5xx (target 0) | {} |",
        run.storage_errors
    );
    for (outcome, count) in &run.outcomes {
        println!("| answers `{outcome}` | {count} |");
    }
    for (reason, count) in &after {
        let during = count - before.get(reason).copied().unwrap_or(0);
        if during > 0 {
            println!("| decisions `{reason}` (gate metrics) | {during} |");
        }
    }
}

/// Budgets wide open, so that only the SQLite-held rules decide: every register is approved
/// or refused by its number's send schedule, every wrong code is counted.
const OPEN_LIMITS: [(&str, &str); 9] = [
    ("SIGNAL_GATE_LIMITS__REGISTER_PER_IP", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__REGISTER_PER_BLOCK", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__REGISTER_PER_PREFIX", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__REGISTER_PER_COUNTRY", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__REGISTER_PER_NUMBER", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__VERIFY_PER_IP", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__VERIFY_PER_NUMBER", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__WRONG_CODES_PER_NUMBER", "100000000/1h"),
    ("SIGNAL_GATE_LIMITS__WRONG_CODES_PER_SESSION", "100000000"),
];

fn describe_machine() {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&[o.stdout, o.stderr].concat())
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|_| format!("{program}: not found"))
    };
    println!("## signal-gate benchmark\n");
    println!("- cores: {}", processes::cores());
    println!("- kernel: {}", run("uname", &["-sr"]));
    println!("- nginx: {}", run(&nginx_binary(), &["-v"]));
    println!(
        "- wrk: {}",
        run("wrk", &["--version"]).lines().next().unwrap_or("")
    );
    println!("- load: wrk -t1 -c{CONNECTIONS}, servers on core 0 with one worker, wrk on core 1");
    println!(
        "- gate: SIGNAL_GATE_LOG__REFUSAL_LINES_PER_SECOND={REFUSAL_LINES}, as the example \
         systemd unit; nginx: its default access and error logs"
    );
}

#[tokio::main]
async fn main() {
    let options = options();
    let binaries = binaries();
    let work = WorkDir::new();
    let emulators = Emulators {
        signal: SignalServerEmulator::start().expect("the signal-server emulator"),
        hcaptcha: HcaptchaEmulator::start(TEST_SECRET, TEST_SITEKEY).expect("hCaptcha emulator"),
    };
    let scripts = wrk::write_scripts(&work.0);
    describe_machine();

    let floods = options.runs("floods").then(|| {
        let targets = start_flood_targets(&binaries, &work, &emulators);
        let mut offset = 0;
        let one = flood(
            &[
                ("signal-gate", targets.gate_one.url.clone()),
                ("nginx limit_req", targets.nginx_one.clone()),
                ("bare actix-web", targets.bare.clone()),
            ],
            &scripts.one_address,
            &options,
            &mut offset,
        );
        let many = flood(
            &[
                ("signal-gate", targets.gate_many.url.clone()),
                (
                    "nginx limit_req (passes go to bare actix-web)",
                    targets.nginx_many.clone(),
                ),
                ("bare actix-web", targets.bare.clone()),
            ],
            &scripts.many_addresses,
            &options,
            &mut offset,
        );
        print_flood("a. One-address flood of POST /v1/register", &one);
        print_flood(
            "b. Flood from a new address each request (X-Forwarded-For)",
            &many,
        );
        (one, many)
    });
    if options.runs("memory") {
        memory_run(&binaries, &work, &emulators, &scripts, options.keys).await;
    }
    if options.runs("latency") {
        latency(&binaries, &work, &emulators).await;
    }
    if options.runs("storage") {
        storage(&binaries, &work, &emulators).await;
    }
    if options.runs("startup") {
        start_up(&binaries, &work, &emulators).await;
    }
    let Some((one, many)) = floods else {
        return;
    };
    println!("\n### Summary against the targets of issue #6\n");
    println!("| comparison | ratio | target |");
    println!("|---|---:|---:|");
    let ratios = [
        (
            "a. gate / nginx",
            one.medians[0] / one.medians[1],
            ">= 1.0x",
        ),
        (
            "a. gate / bare actix-web",
            one.medians[0] / one.medians[2],
            ">= 0.8x",
        ),
        ("b. gate / nginx", many.medians[0] / many.medians[1], ""),
        (
            "b. gate / bare actix-web",
            many.medians[0] / many.medians[2],
            "",
        ),
    ];
    for (comparison, ratio, target) in ratios {
        println!("| {comparison} | {ratio:.2}x | {target} |");
    }
}
