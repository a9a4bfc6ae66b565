//! Client addresses behind reverse proxies: address ranges (`--trusted-proxy CIDR`) and the
//! client address read from `Forwarded` / `X-Forwarded-For`, believed only when the TCP peer
//! is a trusted proxy. Pure functions over strings, so both sides of the HTTP line can use it.

use std::net::IpAddr;
use std::str::FromStr;

/// An address range such as `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: u128,
    /// The prefix length in the IPv6 space (IPv4 lives in the IPv4-mapped range, +96).
    len: u32,
}

/// IPv4 addresses live in the IPv4-mapped IPv6 space, so one comparison serves both.
fn as_u128(ip: IpAddr) -> (u128, u32) {
    match canonical(ip) {
        IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 96),
        IpAddr::V6(v6) => (u128::from(v6), 0),
    }
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (n, _) = as_u128(ip);
        n & mask(self.len) == self.network
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|e| format!("'{s}': {e}"))?;
        let (n, offset) = as_u128(ip);
        let max = 128 - offset;
        let len = match len {
            Some(l) => l.parse::<u32>().map_err(|e| format!("'{s}': prefix {e}"))?,
            None => max,
        };
        if len > max {
            return Err(format!("'{s}': prefix /{len} is longer than /{max}"));
        }
        Ok(Cidr {
            network: n & mask(offset + len),
            len: offset + len,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `for=` value of a `Forwarded` element, or one `X-Forwarded-For` entry, as an address:
/// `192.0.2.1`, `192.0.2.1:443`, `"[2001:db8::1]:443"`, `2001:db8::1`. Obfuscated names
/// (`unknown`, `_hidden`) are `None`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let v = raw.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    // IPv4 with a port.
    let (host, port) = v.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The hops a request passed through, nearest the client first, from `Forwarded` if present,
/// else `X-Forwarded-For`. An element that names no address ends the list there (`None`).
fn hops(forwarded: &[&str], x_forwarded_for: &[&str]) -> Vec<Option<IpAddr>> {
    if !forwarded.is_empty() {
        forwarded
            .iter()
            .flat_map(|h| h.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v))
            })
            .collect()
    } else {
        x_forwarded_for
            .iter()
            .flat_map(|h| h.split(','))
            .map(parse_node)
            .collect()
    }
}

/// The client's address. The TCP peer, unless it is a trusted proxy: then the forwarded
/// headers are read from the right (the hop the proxy itself added) and the first address that
/// is not another trusted proxy is the client. Anything a client wrote to the left of that is
/// ignored, so a client cannot choose its address by sending the header itself.
pub fn client_address(
    peer: IpAddr,
    trusted: &[Cidr],
    forwarded: &[&str],
    x_forwarded_for: &[&str],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in hops(forwarded, x_forwarded_for).into_iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            // A hop the proxy could not name: the nearest address known is the answer.
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match_v4_v6_and_mapped_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let proxy: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        // Not from a proxy: the header is the client's own words and is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &proxy, &[], &["198.51.100.1"]),
            ip("203.0.113.9")
        );
        // From the proxy: the rightmost untrusted hop; what the client prepended is ignored.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &proxy,
                &[],
                &["1.1.1.1, 203.0.113.9", "10.0.0.7"]
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &proxy,
                &["for=1.1.1.1, for=\"[2001:db8::5]:443\";proto=https"],
                &["9.9.9.9"]
            ),
            ip("2001:db8::5"),
            "Forwarded wins over X-Forwarded-For"
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &proxy, &["for=192.0.2.4:8080"], &[]),
            ip("192.0.2.4")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &proxy, &["for=unknown"], &[]),
            ip("10.0.0.2"),
            "an unnamed hop leaves the proxy as the nearest known address"
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &proxy, &[], &[]),
            ip("10.0.0.2")
        );
    }
}
