//! Enrichment: the country, city and autonomous system of an address, from
//! MaxMind DB files (GeoLite2 City or Country, and ASN), cached per
//! address. An address the databases do not hold gets nothing, without
//! error.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::{geoip2, Reader};
use serde::Serialize;

/// What the databases say about one address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 country code (`GB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<Box<str>>,
    /// The city's English name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<Box<str>>,
    /// The autonomous system number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The autonomous system's organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_org: Option<Box<str>>,
}

/// Why the databases could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct GeoError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// The databases of a directory, and the answers given so far.
pub struct GeoIp {
    city: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
    // FxHash: the cache is asked once per record; SipHash's resistance to
    // chosen keys buys nothing for a per-run cache of a few thousand keys.
    // Keyed by the address as a number (IPv4 mapped into IPv6): cheaper
    // to hash and compare than `IpAddr`.
    cache: HashMap<u128, Geo, rustc_hash::FxBuildHasher>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("city", &self.city.is_some())
            .field("asn", &self.asn.is_some())
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl GeoIp {
    /// Opens the `*City*.mmdb` (else `*Country*.mmdb`) and `*ASN*.mmdb`
    /// files of `dir`; a directory with none of them is an error.
    pub fn open(dir: &Path) -> Result<GeoIp, GeoError> {
        let err = |p: &Path, m: String| GeoError {
            path: p.display().to_string(),
            message: m,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| err(dir, e.to_string()))?;
        let mut names: Vec<std::path::PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "mmdb"))
            .collect();
        names.sort();
        let find = |word: &str| {
            names.iter().find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(word))
            })
        };
        let open =
            |p: &std::path::PathBuf| Reader::open_readfile(p).map_err(|e| err(p, e.to_string()));
        let city = match find("City").or_else(|| find("Country")) {
            Some(p) => Some(open(p)?),
            None => None,
        };
        let asn = match find("ASN") {
            Some(p) => Some(open(p)?),
            None => None,
        };
        if city.is_none() && asn.is_none() {
            return Err(err(
                dir,
                "no GeoLite2/GeoIP2 City, Country or ASN .mmdb file here".into(),
            ));
        }
        Ok(GeoIp {
            city,
            asn,
            cache: HashMap::default(),
        })
    }

    /// What the databases say about `ip` (nothing when they do not hold
    /// it, or cannot decode its record).
    pub fn lookup(&mut self, ip: IpAddr) -> &Geo {
        let (city, asn) = (&self.city, &self.asn);
        let key = match ip {
            IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
            IpAddr::V6(a) => u128::from(a),
        };
        self.cache.entry(key).or_insert_with(|| {
            let mut g = Geo::default();
            if let Some(r) = city {
                if let Ok(Some(c)) = r.lookup(ip).and_then(|l| l.decode::<geoip2::City>()) {
                    g.country = c.country.iso_code.map(Into::into);
                    g.city = c.city.names.english.map(Into::into);
                }
            }
            if let Some(r) = asn {
                if let Ok(Some(a)) = r.lookup(ip).and_then(|l| l.decode::<geoip2::Asn>()) {
                    g.asn = a.autonomous_system_number;
                    g.as_org = a.autonomous_system_organization.map(Into::into);
                }
            }
            g
        })
    }
}
