//! A coarse place for an address, only from an offline database the operator supplies: a CSV
//! of `CIDR,place` lines (e.g. `192.0.2.0/24,Oslo office`). No lookup ever leaves the machine;
//! with no database, places are simply absent. The most specific matching range wins.

use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PlaceDbError {
    #[error("cannot read place database {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("place database line {line}: {message}")]
    Line { line: usize, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct PlaceDb {
    /// (network as u128, prefix length in the u128 space, place)
    ranges: Vec<(u128, u32, String)>,
}

/// IPv4 addresses live in the IPv4-mapped IPv6 space, so one comparison serves both.
fn as_u128(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 96),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u128::from(v4.to_ipv6_mapped()), 96),
            None => (u128::from(v6), 0),
        },
    }
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl PlaceDb {
    pub fn load(path: &Path) -> Result<PlaceDb, PlaceDbError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlaceDbError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<PlaceDb, PlaceDbError> {
        let mut ranges = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| PlaceDbError::Line {
                line: i + 1,
                message,
            };
            let (cidr, place) = line
                .split_once(',')
                .ok_or_else(|| err("expected CIDR,place".into()))?;
            let (ip, len) = cidr
                .trim()
                .split_once('/')
                .ok_or_else(|| err(format!("'{cidr}' has no /prefix")))?;
            let ip: IpAddr = ip.parse().map_err(|e| err(format!("'{ip}': {e}")))?;
            let len: u32 = len
                .parse()
                .map_err(|e| err(format!("prefix '{len}': {e}")))?;
            let (net, offset) = as_u128(ip);
            let max = if offset == 96 { 32 } else { 128 };
            if len > max {
                return Err(err(format!("prefix /{len} is longer than /{max}")));
            }
            let place = place.trim().chars().take(100).collect::<String>();
            ranges.push((net & mask(offset + len), offset + len, place));
        }
        // Most specific first, so the first match is the best.
        ranges.sort_by_key(|r| std::cmp::Reverse(r.1));
        Ok(PlaceDb { ranges })
    }

    pub fn lookup(&self, address: &str) -> Option<String> {
        let ip: IpAddr = address.parse().ok()?;
        let (n, _) = as_u128(ip);
        self.ranges
            .iter()
            .find(|(net, len, _)| n & mask(*len) == *net)
            .map(|(_, _, place)| place.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_range_wins_for_v4_and_v6() {
        let db = PlaceDb::parse("# comment\n10.0.0.0/8,Corporate network\n10.1.2.0/24,Oslo office\n2001:db8::/32,Lab\n127.0.0.0/8,This machine\n").unwrap();
        assert_eq!(db.lookup("10.1.2.3").as_deref(), Some("Oslo office"));
        assert_eq!(db.lookup("10.9.9.9").as_deref(), Some("Corporate network"));
        assert_eq!(db.lookup("::ffff:10.1.2.3").as_deref(), Some("Oslo office"));
        assert_eq!(db.lookup("2001:db8::1").as_deref(), Some("Lab"));
        assert_eq!(db.lookup("192.0.2.1"), None);
        assert_eq!(db.lookup("unknown"), None);
        assert!(PlaceDb::parse("10.0.0.0/33,x").is_err());
        assert!(PlaceDb::parse("nonsense").is_err());
    }
}
