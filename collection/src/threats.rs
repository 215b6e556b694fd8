//! A threat list: networks (CIDRs, one per line, `#` comments) whose
//! addresses are known bad. Looked up by binary search over merged ranges.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks of a threat list, as sorted, merged address ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreatList {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// A line of a threat list that is not a network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {text:?} is not a CIDR or an address")]
pub struct ThreatListError {
    /// 1-based.
    pub line: usize,
    /// The line.
    pub text: String,
}

fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|n| lo <= n) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn contains<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|(lo, _)| *lo <= x);
    i > 0 && x <= ranges[i - 1].1
}

impl ThreatList {
    /// Reads a list: a CIDR or a bare address per line; blank lines and
    /// `#` comments are skipped.
    pub fn parse(text: &str) -> Result<ThreatList, ThreatListError> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let net: IpNet = match line.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => match line.parse::<IpAddr>() {
                    Ok(a) => IpNet::from(a),
                    Err(_) => {
                        return Err(ThreatListError {
                            line: i + 1,
                            text: raw.to_string(),
                        })
                    }
                },
            };
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Ok(ThreatList {
            v4: merge(v4, |x: u32| x.checked_add(1)),
            v6: merge(v6, |x: u128| x.checked_add(1)),
        })
    }

    /// Whether `ip` is in a listed network (an IPv4-mapped IPv6 address as
    /// its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => contains(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => contains(&self.v4, u32::from(v4)),
                None => contains(&self.v6, u128::from(a)),
            },
        }
    }

    /// How many merged ranges the list holds.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True for an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_addresses() {
        let t = ThreatList::parse(
            "# feed\n198.51.100.0/24\n198.51.101.0/24 # adjacent, merged\n203.0.113.7\n2001:db8:bad::/48\n\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        for hit in [
            "198.51.100.0",
            "198.51.101.255",
            "203.0.113.7",
            "2001:db8:bad::1",
            "::ffff:198.51.100.9",
        ] {
            assert!(t.contains(hit.parse().unwrap()), "{hit}");
        }
        for miss in ["198.51.102.0", "203.0.113.8", "2001:db8:bae::1", "10.0.0.1"] {
            assert!(!t.contains(miss.parse().unwrap()), "{miss}");
        }
        assert!(ThreatList::parse("0.0.0.0/0")
            .unwrap()
            .contains("255.255.255.255".parse().unwrap()));
        assert_eq!(
            ThreatList::parse("10.0.0.0/8\nnot-a-net\n"),
            Err(ThreatListError {
                line: 2,
                text: "not-a-net".into()
            })
        );
    }
}
