//! The networks a rental routes: its IPv4 prefix (`address/prefix_len`) and its IPv6 prefix,
//! as the router's allowed IPs and as the customer's configuration.

use crate::store::RentalRow;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use staticwire_api as api;
use std::net::Ipv6Addr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
}

impl Networks {
    /// None when the stored values do not parse (never written so by this program). An empty
    /// `address` is an IPv6-only rental.
    pub fn new(address: &str, prefix_len: u8, ipv6: Option<&str>) -> Option<Networks> {
        let v4 = match address {
            "" => None,
            a => Some(Ipv4Net::new(a.parse().ok()?, prefix_len).ok()?.trunc()),
        };
        let v6 = match ipv6 {
            Some(s) => Some(s.parse().ok()?),
            None => None,
        };
        if v4.is_none() && v6.is_none() {
            return None;
        }
        Some(Networks { v4, v6 })
    }

    pub fn of_view(r: &api::Rental) -> Networks {
        Networks::new(&r.address, r.prefix_len, r.ipv6.as_deref()).unwrap_or_default()
    }

    /// The router's allowed IPs for the peer, sorted.
    pub fn nets(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.v4.map(IpNet::V4).into_iter().collect();
        v.extend(self.v6.map(IpNet::V6));
        v.sort();
        v
    }

    pub fn cidrs(&self) -> Vec<String> {
        self.nets().iter().map(ToString::to_string).collect()
    }

    /// One IPv4 address and nothing else: what the original StaticWire rented.
    pub fn is_single(&self) -> bool {
        self.v6.is_none() && self.v4.is_some_and(|n| n.prefix_len() == 32)
    }

    /// Addresses for the customer's WireGuard interface: the first IPv4 address and the
    /// `::1` of the IPv6 prefix, each alone; the rest of each prefix is the customer's to use
    /// behind it.
    pub fn interface_addresses(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = self.v4 {
            v.push(format!("{}/32", n.network()));
        }
        if let Some(n) = self.v6 {
            v.push(format!(
                "{}/128",
                Ipv6Addr::from(u128::from(n.network()) | 1)
            ));
        }
        v
    }

    /// What the customer sends through the tunnel: everything, of each family it has.
    pub fn allowed_ips(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.v4.is_some() {
            v.push("0.0.0.0/0".to_string());
        }
        if self.v6.is_some() {
            v.push("::/0".to_string());
        }
        v
    }
}

impl RentalRow {
    pub fn networks_of(&self) -> Option<Networks> {
        Networks::new(&self.address, self.prefix_len, self.ipv6.as_deref())
    }

    /// The router's allowed IPs for this rental's peer.
    pub fn networks(&self) -> Option<Vec<IpNet>> {
        self.networks_of().map(|n| n.nets())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_and_a_v6_prefix() {
        let n = Networks::new("203.0.113.8", 30, Some("2001:db8:0:5::/64")).unwrap();
        assert_eq!(n.cidrs(), ["203.0.113.8/30", "2001:db8:0:5::/64"]);
        assert_eq!(
            n.interface_addresses(),
            ["203.0.113.8/32", "2001:db8:0:5::1/128"]
        );
        assert_eq!(n.allowed_ips(), ["0.0.0.0/0", "::/0"]);
        assert!(!n.is_single());
        let one = Networks::new("203.0.113.8", 32, None).unwrap();
        assert!(one.is_single());
        assert_eq!(one.allowed_ips(), ["0.0.0.0/0"]);
        assert_eq!(
            Networks::new("203.0.113.9", 30, None).unwrap().cidrs(),
            ["203.0.113.8/30"]
        );
        assert!(Networks::new("nonsense", 32, None).is_none());
        assert!(Networks::new("203.0.113.8", 33, None).is_none());
        assert!(Networks::new("203.0.113.8", 32, Some("x")).is_none());
        let v6 = Networks::new("", 32, Some("2001:db8:0:7::/64")).unwrap();
        assert_eq!(v6.cidrs(), ["2001:db8:0:7::/64"]);
        assert_eq!(v6.interface_addresses(), ["2001:db8:0:7::1/128"]);
        assert_eq!(v6.allowed_ips(), ["::/0"]);
        assert!(Networks::new("", 32, None).is_none(), "nothing at all");
    }
}
