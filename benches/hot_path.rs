//! Micro-benchmarks of the per-request hot path: number canonicalisation, client-address
//! resolution and the limiter check. Run with `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use signal_gate::domain::{ClientAddress, PhoneNumber, TrustedProxies};
use signal_gate::limits::{LimitRule, LimitStore, MemoryLimitStore, Rate};

fn number_canonicalisation(c: &mut Criterion) {
    c.bench_function("parse +44 (7400) 123-456", |b| {
        b.iter(|| PhoneNumber::parse(black_box("+44 (7400) 123-456")))
    });
}

fn address_resolution(c: &mut Criterion) {
    let trusted: TrustedProxies = "127.0.0.1/32,10.0.0.0/8".parse().expect("valid");
    let peer: IpAddr = "127.0.0.1".parse().expect("valid");
    let lines = ["198.51.100.7, 10.1.2.3"];
    c.bench_function("resolve X-Forwarded-For through two proxies", |b| {
        b.iter(|| ClientAddress::resolve(peer, black_box(lines).into_iter(), &trusted).limit_key())
    });
}

fn limiter_check(c: &mut Criterion) {
    let rate = Rate::new(10, Duration::from_secs(3600));
    let store = MemoryLimitStore::new(
        &[(LimitRule::RegisterPerAddress, rate)],
        1_000_000,
        std::sync::Arc::new(signal_gate::clock::SystemClock),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut key = 0u128;
    c.bench_function("acquire on a limited key", |b| {
        b.iter(|| runtime.block_on(store.acquire(LimitRule::RegisterPerAddress, black_box(1), 0)))
    });
    c.bench_function("acquire on a new key each time", |b| {
        b.iter(|| {
            key += 1;
            runtime.block_on(store.acquire(LimitRule::RegisterPerAddress, black_box(key), 0))
        })
    });
}

criterion_group!(
    benches,
    number_canonicalisation,
    address_resolution,
    limiter_check
);
criterion_main!(benches);
