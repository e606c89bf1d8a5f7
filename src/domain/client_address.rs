//! The client address: who is asking, as far as the gate can tell without being lied to.
//!
//! It is the socket peer, unless the peer is one of the operator's trusted proxies. Then the
//! `X-Forwarded-For` chain is read from the right, skipping the trusted proxies, and the first
//! address that is not one of them is the client: everything left of it was written by the
//! client and proves nothing. An entry that does not parse ends the walk at the last trusted
//! hop, so garbage never earns a fresh budget. `Forwarded` and `X-Real-IP` are not read.
//!
//! Budgets key on the address's block: IPv4 addresses one by one, IPv6 by /64, since one
//! subscriber usually holds a whole /64 and can rotate through it at will.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// The CIDRs whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = unmapped(address);
        self.0.iter().any(|net| net.contains(&address))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDRs; a bare address means just that address.
    fn from_str(text: &str) -> Result<TrustedProxies, String> {
        let parse_one = |item: &str| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("{item:?} is not a CIDR such as 10.0.0.0/8 or ::1/128"))
        };
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty());
        Ok(TrustedProxies(
            items.map(parse_one).collect::<Result<_, _>>()?,
        ))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

/// The resolved client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    /// Resolves the client from the socket peer and the `X-Forwarded-For` header lines, in the
    /// order they arrived.
    pub fn resolve<'a>(
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
        trusted: &TrustedProxies,
    ) -> ClientAddress {
        let mut client = unmapped(peer);
        if !trusted.contains(client) {
            return ClientAddress(client);
        }
        let entries = forwarded_for.rev().flat_map(|line| line.rsplit(','));
        for entry in entries {
            match parse_forwarded_entry(entry) {
                Some(address) if trusted.contains(address) => client = address,
                Some(address) => return ClientAddress(address),
                None => break,
            }
        }
        ClientAddress(client)
    }

    pub fn ip(&self) -> IpAddr {
        self.0
    }

    /// The key of the per-address budget: an IPv4 address, or an IPv6 /64.
    pub fn limit_key(&self) -> u128 {
        match self.0 {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
        }
    }

    /// The key of the per-block budget: IPv4 /24 or IPv6 /48.
    pub fn block_key(&self) -> u128 {
        match self.0 {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()) & !0xFF,
            IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 80) - 1),
        }
    }

    /// The address as blocks name it: an IPv4 address, or an IPv6 /64.
    pub fn limit_label(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(_) => IpNet::new(self.0, 64)
                .map(|n| n.trunc().to_string())
                .unwrap_or_default(),
        }
    }

    /// The address block for logs: IPv4 /24 or IPv6 /48, coarse enough to say nothing about
    /// one person.
    pub fn block_label(&self) -> String {
        let net = match self.0 {
            IpAddr::V4(_) => IpNet::new(self.0, 24),
            IpAddr::V6(_) => IpNet::new(self.0, 48),
        };
        net.map(|n| n.trunc().to_string()).unwrap_or_default()
    }
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are the IPv4 address they carry.
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, a bracketed IPv6 address, either with a port.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(unmapped(address));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(IpAddr::V6);
    }
    let (host, port) = entry.rsplit_once(':')?;
    let v4: Ipv4Addr = host.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(v4))
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn resolve(peer: &str, lines: &[&str], trusted: &str) -> String {
        let trusted: TrustedProxies = trusted.parse().expect("test CIDRs");
        ClientAddress::resolve(ip(peer), lines.iter().copied(), &trusted).to_string()
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let proxy = "10.0.0.0/8";
        let cases: &[(&str, &[&str], &str, &str)] = &[
            ("203.0.113.9", &["198.51.100.1"], proxy, "203.0.113.9"),
            ("10.0.0.2", &[], proxy, "10.0.0.2"),
            ("10.0.0.2", &["198.51.100.1"], proxy, "198.51.100.1"),
            (
                "10.0.0.2",
                &["1.1.1.1, 198.51.100.1"],
                proxy,
                "198.51.100.1",
            ),
            (
                "10.0.0.2",
                &["1.1.1.1", "198.51.100.1"],
                proxy,
                "198.51.100.1",
            ),
            (
                "10.0.0.2",
                &["198.51.100.1, 10.0.0.7"],
                proxy,
                "198.51.100.1",
            ),
            ("10.0.0.2", &["198.51.100.1, garbage"], proxy, "10.0.0.2"),
            (
                "10.0.0.2",
                &["198.51.100.1, garbage, 10.0.0.9"],
                proxy,
                "10.0.0.9",
            ),
            ("10.0.0.2", &["10.0.0.5, 10.0.0.9"], proxy, "10.0.0.5"),
            ("10.0.0.2", &[""], proxy, "10.0.0.2"),
            ("10.0.0.2", &["[2001:db8::1]:443"], proxy, "2001:db8::1"),
            ("10.0.0.2", &["198.51.100.1:5555"], proxy, "198.51.100.1"),
            ("10.0.0.2", &["::ffff:198.51.100.1"], proxy, "198.51.100.1"),
            ("::ffff:10.0.0.2", &["198.51.100.1"], proxy, "198.51.100.1"),
            ("10.0.0.2", &["198.51.100.1"], "", "10.0.0.2"),
        ];
        for (peer, lines, trusted, expected) in cases {
            assert_eq!(&resolve(peer, lines, trusted), expected, "{peer} {lines:?}");
        }
    }

    #[test]
    fn ipv6_clients_share_one_budget_per_64() {
        let one = ClientAddress(ip("2001:db8:1:2:aaaa::1"));
        let two = ClientAddress(ip("2001:db8:1:2:ffff::9"));
        let other = ClientAddress(ip("2001:db8:1:3::1"));
        assert_eq!(one.limit_key(), two.limit_key());
        assert_ne!(one.limit_key(), other.limit_key());
        assert_eq!(one.block_label(), "2001:db8:1::/48");
        assert_eq!(one.limit_label(), "2001:db8:1:2::/64");
        assert_eq!(one.block_key(), other.block_key());
        let v4 = ClientAddress(ip("192.0.2.77"));
        assert_eq!(v4.block_key(), ClientAddress(ip("192.0.2.1")).block_key());
        assert_ne!(v4.block_key(), ClientAddress(ip("192.0.3.1")).block_key());
        assert_eq!(v4.limit_label(), "192.0.2.77/32");
        assert_eq!(
            ClientAddress(ip("192.0.2.77")).block_label(),
            "192.0.2.0/24"
        );
    }

    #[test]
    fn trusted_proxy_lists_parse_and_refuse_garbage() {
        let parsed: TrustedProxies = "127.0.0.1, ::1/128 ,10.1.2.3/8".parse().expect("valid");
        assert_eq!(parsed.to_string(), "127.0.0.1/32,::1/128,10.0.0.0/8");
        assert!("10.0.0.0/8,banana".parse::<TrustedProxies>().is_err());
        assert!(""
            .parse::<TrustedProxies>()
            .expect("empty is fine")
            .is_empty());
    }

    proptest! {
        #[test]
        fn an_untrusted_peer_is_always_the_client(header in "\\PC{0,100}", a in any::<u32>()) {
            let peer = IpAddr::V4(Ipv4Addr::from(a | 0x0100_0000));
            let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
            prop_assume!(!trusted.contains(peer));
            let client = ClientAddress::resolve(peer, [header.as_str()].into_iter(), &trusted);
            prop_assert_eq!(client.ip(), peer);
        }

        #[test]
        fn the_client_is_never_left_of_a_garbage_entry(left in any::<u32>(), junk in "[a-z]{1,8}") {
            let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
            let forged = Ipv4Addr::from(left).to_string();
            let line = format!("{forged}, {junk}");
            let lines = [line.as_str()].into_iter();
            let client = ClientAddress::resolve(ip("10.0.0.1"), lines, &trusted);
            prop_assert_eq!(client.ip(), ip("10.0.0.1"));
        }
    }
}
