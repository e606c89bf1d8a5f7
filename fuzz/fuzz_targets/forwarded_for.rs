#![no_main]
//! Whatever the X-Forwarded-For lines say, an untrusted peer is always the client.

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use signal_gate::domain::{ClientAddress, TrustedProxies};

fuzz_target!(|lines: Vec<&str>| {
    let trusted: TrustedProxies = "127.0.0.0/8".parse().expect("valid");
    let outsider = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let client = ClientAddress::resolve(outsider, lines.iter().copied(), &trusted);
    assert_eq!(client.ip(), outsider);
    let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let proxied = ClientAddress::resolve(proxy, lines.into_iter(), &trusted);
    let _ = proxied.limit_key();
});
