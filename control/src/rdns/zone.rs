//! Where an address's PTR lives: the configured reverse zone whose network holds it (the
//! longest match), and its owner name there. A /24 or larger IPv4 network uses the standard
//! `d.c.b.a.in-addr.arpa.` names; a smaller one, delegated by RFC 2317, names its owners
//! after the delegated zone (e.g. `10.8-29.113.0.203.in-addr.arpa.`, the parent zone holding
//! a CNAME from `10.113.0.203.in-addr.arpa.` to it), through the zone's owner template.
//! IPv6 owners are the standard nibble names under `ip6.arpa.`.

use super::names::fill;
use crate::config::RdnsZoneConfig;
use hickory_proto::rr::Name;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("zone {0:?} is not a DNS name: {1}")]
    BadZone(String, String),
    #[error("zone {zone}: the owner name of {address} ({owner}) is not inside the zone")]
    OwnerOutside {
        zone: String,
        address: IpAddr,
        owner: String,
    },
}

/// One reverse zone and the network whose PTRs it holds.
#[derive(Debug, Clone)]
pub struct Zone {
    pub origin: Name,
    pub network: IpNet,
    owner: Option<String>,
}

/// Every configured reverse zone.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: Vec<Zone>,
}

fn absolute(name: &str) -> Result<Name, String> {
    let mut n = Name::from_str(name).map_err(|e| e.to_string())?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// The standard reverse name of an address.
pub fn standard_owner(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// The IPv6 address a nibble name under `ip6.arpa.` names, if it is one.
pub fn ipv6_of_owner(owner: &Name) -> Option<Ipv6Addr> {
    let s = owner.to_lowercase().to_ascii();
    let nibbles = s.strip_suffix("ip6.arpa.")?;
    let digits: Vec<&str> = nibbles.split('.').filter(|l| !l.is_empty()).collect();
    if digits.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for d in digits.iter().rev() {
        v = (v << 4) | u128::from_str_radix(d, 16).ok().filter(|_| d.len() == 1)?;
    }
    Some(Ipv6Addr::from(v))
}

impl Zones {
    pub fn new(cfg: &[RdnsZoneConfig]) -> Result<Zones, ZoneError> {
        let mut zones = Vec::new();
        for z in cfg {
            let origin = absolute(&z.zone).map_err(|e| ZoneError::BadZone(z.zone.clone(), e))?;
            let zone = Zone {
                origin,
                network: z.network.trunc(),
                owner: z.owner.clone(),
            };
            // Every owner must fall inside its zone: checked on the network's first address.
            let first = zone.network.network();
            let owner = zone.owner_of(first);
            if !owner
                .as_ref()
                .is_ok_and(|o| zone.origin.zone_of(o) && o != &zone.origin)
            {
                return Err(ZoneError::OwnerOutside {
                    zone: z.zone.clone(),
                    address: first,
                    owner: owner.map(|o| o.to_ascii()).unwrap_or_else(|e| e),
                });
            }
            zones.push(zone);
        }
        Ok(Zones { zones })
    }

    pub fn all(&self) -> &[Zone] {
        &self.zones
    }

    /// The zone (its index) whose network holds `ip` (the longest one), and the PTR's owner
    /// name there.
    pub fn locate(&self, ip: IpAddr) -> Option<(usize, Name)> {
        let (i, z) = self
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| z.network.contains(&ip))
            .max_by_key(|(_, z)| z.network.prefix_len())?;
        let owner = z.owner_of(ip).ok()?;
        z.origin.zone_of(&owner).then_some((i, owner))
    }
}

impl Zone {
    fn owner_of(&self, ip: IpAddr) -> Result<Name, String> {
        match (ip, &self.owner) {
            (IpAddr::V4(v4), Some(t)) => absolute(&fill(t, v4)),
            _ => absolute(&standard_owner(ip)),
        }
    }

    /// The IPv4 addresses of this zone's network.
    pub fn ipv4_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let net = match self.network {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        };
        net.into_iter()
            .flat_map(|n| n.hosts().chain([n.network(), n.broadcast()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(zone: &str, network: &str, owner: Option<&str>) -> RdnsZoneConfig {
        RdnsZoneConfig {
            zone: zone.into(),
            network: network.parse().unwrap(),
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn standard_and_classless_owners() {
        let zones = Zones::new(&[
            zone("113.0.203.in-addr.arpa", "203.0.113.0/24", None),
            zone(
                "8-29.113.0.203.in-addr.arpa.",
                "203.0.113.8/29",
                Some("{d}.8-29.113.0.203.in-addr.arpa."),
            ),
            zone(
                "0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "2001:db8:100::/48",
                None,
            ),
        ])
        .unwrap();
        let (i, o) = zones.locate("203.0.113.10".parse().unwrap()).unwrap();
        assert_eq!(
            (i, o.to_ascii().as_str()),
            (1, "10.8-29.113.0.203.in-addr.arpa.")
        );
        let (i, o) = zones.locate("203.0.113.20".parse().unwrap()).unwrap();
        assert_eq!(
            (i, o.to_ascii().as_str()),
            (0, "20.113.0.203.in-addr.arpa.")
        );
        assert!(zones.locate("198.51.100.1".parse().unwrap()).is_none());
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        let (i, o) = zones.locate(v6).unwrap();
        assert_eq!(i, 2);
        assert_eq!(
            o.to_ascii(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        assert_eq!(ipv6_of_owner(&o), Some("2001:db8:100::1".parse().unwrap()));
        assert_eq!(zones.all()[1].ipv4_addresses().count(), 8);
    }

    #[test]
    fn an_owner_template_outside_its_zone_is_refused() {
        let bad = Zones::new(&[zone(
            "8-29.113.0.203.in-addr.arpa.",
            "203.0.113.8/29",
            Some("{d}.113.0.203.in-addr.arpa."),
        )]);
        assert!(matches!(bad, Err(ZoneError::OwnerOutside { .. })));
    }
}
