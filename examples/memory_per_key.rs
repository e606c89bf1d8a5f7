//! Measures what the in-memory budgets cost: resident memory after a million distinct keys in
//! one rule's cache, and per key. Run with
//! `cargo run --release --example memory_per_key [keys] [capacity]`.

use std::time::{Duration, Instant};

use signal_gate::limits::{LimitRule, LimitStore, MemoryLimitStore, Rate};

// The process helpers of the HTTP benchmark; this one reads its own memory with them.
#[allow(dead_code)]
#[path = "bench/processes.rs"]
mod processes;

fn resident_kib() -> u64 {
    processes::status_kib(std::process::id(), "VmRSS:")
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let keys = args.next().flatten().unwrap_or(1_000_000);
    let capacity = args.next().flatten().unwrap_or(1_000_000);
    let rate = Rate::new(10, Duration::from_secs(3600));
    let rule = LimitRule::RegisterPerAddress;
    let store = MemoryLimitStore::new(
        &[(rule, rate)],
        capacity,
        std::sync::Arc::new(signal_gate::clock::SystemClock),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let before = resident_kib();
    let started = Instant::now();
    for key in 0..u128::from(keys) {
        runtime.block_on(store.acquire(rule, key, 0));
    }
    let elapsed = started.elapsed();
    let tracked = store.tracked_keys().first().map_or(0, |(_, n)| *n);
    let after = resident_kib();
    let grown = after.saturating_sub(before) * 1024;
    println!("keys offered          {keys}");
    println!("cache capacity        {capacity}");
    println!("keys tracked          {tracked}");
    println!("resident before       {} MiB", before / 1024);
    println!("resident after        {} MiB", after / 1024);
    println!("bytes per tracked key {}", grown / tracked.max(1));
    println!(
        "inserts per second    {:.0}",
        keys as f64 / elapsed.as_secs_f64()
    );
}
