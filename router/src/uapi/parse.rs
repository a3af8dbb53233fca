//! Parsing of `set=1` requests into a typed change set.
//!
//! The whole request is parsed and validated before anything is applied, so a bad line anywhere
//! answers an errno and changes nothing.

use crate::key::Key;
use crate::request::{AllowedIpChange, PeerChange, SetRequest, UapiError};
use crate::routes::canonical;
use ipnet::IpNet;
use std::net::SocketAddr;

fn invalid(key: &'static str, value: &str) -> UapiError {
    UapiError::InvalidValue {
        key,
        value: value.chars().take(80).collect(),
    }
}

fn parse_key(key: &'static str, value: &str) -> Result<Key, UapiError> {
    Key::from_hex(value).map_err(|_| invalid(key, value))
}

/// A key that may be all zero, meaning "none".
fn parse_optional_key(key: &'static str, value: &str) -> Result<Option<Key>, UapiError> {
    let k = parse_key(key, value)?;
    Ok((!k.is_zero()).then_some(k))
}

fn parse_true(key: &'static str, value: &str) -> Result<bool, UapiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value)),
    }
}

fn parse_num<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, UapiError> {
    // Only plain decimal digits: `str::parse` would also accept a leading '+'.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(key, value));
    }
    value.parse().map_err(|_| invalid(key, value))
}

fn parse_endpoint(value: &str) -> Result<SocketAddr, UapiError> {
    let addr: SocketAddr = value.parse().map_err(|_| invalid("endpoint", value))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(invalid("endpoint", value));
    }
    Ok(addr)
}

fn parse_allowed_ip(value: &str) -> Result<AllowedIpChange, UapiError> {
    let (remove, net) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let net: IpNet = net.parse().map_err(|_| invalid("allowed_ip", value))?;
    let net = canonical(net);
    Ok(if remove {
        AllowedIpChange::Remove(net)
    } else {
        AllowedIpChange::Add(net)
    })
}

/// Parses the lines of a `set=1` request (without the `set=1` line and the final empty line).
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    for line in lines {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| UapiError::Malformed(line.chars().take(80).collect()))?;
        if key == "public_key" {
            req.peers.push(PeerChange {
                public_key: parse_key("public_key", value)?,
                ..PeerChange::default()
            });
            continue;
        }
        match req.peers.last_mut() {
            None => parse_interface_line(&mut req, key, value)?,
            Some(peer) => parse_peer_line(peer, key, value)?,
        }
    }
    Ok(req)
}

fn parse_interface_line(req: &mut SetRequest, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => req.private_key = Some(parse_optional_key("private_key", value)?),
        "listen_port" => req.listen_port = Some(parse_num("listen_port", value)?),
        "fwmark" => req.fwmark = Some(parse_num("fwmark", value)?),
        "replace_peers" => req.replace_peers = parse_true("replace_peers", value)?,
        k => return Err(peer_key_or_unknown(k, UapiError::PeerKeyOutsidePeer)),
    }
    Ok(())
}

fn parse_peer_line(peer: &mut PeerChange, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "remove" => peer.remove = parse_true("remove", value)?,
        "update_only" => peer.update_only = parse_true("update_only", value)?,
        "preshared_key" => peer.preshared_key = Some(parse_optional_key("preshared_key", value)?),
        "endpoint" => peer.endpoint = Some(parse_endpoint(value)?),
        "persistent_keepalive_interval" => {
            peer.persistent_keepalive = Some(parse_num("persistent_keepalive_interval", value)?)
        }
        "replace_allowed_ips" => {
            peer.replace_allowed_ips = parse_true("replace_allowed_ips", value)?
        }
        "allowed_ip" => peer.allowed_ips.push(parse_allowed_ip(value)?),
        "rate_limit_bps" => peer.rate_limit_bps = Some(parse_num("rate_limit_bps", value)?),
        "rate_limit_pps" => peer.rate_limit_pps = Some(parse_num("rate_limit_pps", value)?),
        "block_smtp" => peer.block_smtp = Some(parse_true("block_smtp", value)?),
        "protocol_version" => {
            if value != "1" {
                return Err(invalid("protocol_version", value));
            }
        }
        k => return Err(interface_key_or_unknown(k)),
    }
    Ok(())
}

const PEER_KEYS: [&str; 11] = [
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
    "rate_limit_bps",
    "rate_limit_pps",
    "block_smtp",
];
const INTERFACE_KEYS: [&str; 4] = ["private_key", "listen_port", "fwmark", "replace_peers"];

fn peer_key_or_unknown(k: &str, err: fn(&'static str) -> UapiError) -> UapiError {
    match PEER_KEYS.iter().find(|p| **p == k) {
        Some(p) => err(p),
        None => UapiError::UnknownKey(k.chars().take(80).collect()),
    }
}

fn interface_key_or_unknown(k: &str) -> UapiError {
    match INTERFACE_KEYS.iter().find(|p| **p == k) {
        Some(p) => UapiError::InterfaceKeyInPeer(p),
        None => UapiError::UnknownKey(k.chars().take(80).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::EINVAL;

    const PK: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const PK2: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";

    fn set(text: &str) -> Result<SetRequest, UapiError> {
        parse_set(text.lines())
    }

    #[test]
    fn every_interface_key() {
        let r = set(&format!(
            "private_key={PK}\nlisten_port=51820\nfwmark=0\nreplace_peers=true"
        ))
        .unwrap();
        assert_eq!(r.private_key, Some(Some(Key::from_hex(PK).unwrap())));
        assert_eq!(r.listen_port, Some(51820));
        assert_eq!(r.fwmark, Some(0));
        assert!(r.replace_peers);
        assert!(r.peers.is_empty());
    }

    #[test]
    fn zero_private_key_removes_it() {
        let r = set(&format!("private_key={}", "0".repeat(64))).unwrap();
        assert_eq!(r.private_key, Some(None));
    }

    #[test]
    fn every_peer_key() {
        let r = set(&format!(
            "public_key={PK}\nupdate_only=true\npreshared_key={PK2}\nendpoint=198.18.0.2:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=203.0.113.10/32\n\
             allowed_ip=-10.0.0.0/8\nallowed_ip=2001:db8::1/64\nprotocol_version=1\n\
             public_key={PK2}\nremove=true\npublic_key={PK}\nendpoint=[2001:db8::2]:443"
        ))
        .unwrap();
        assert_eq!(r.peers.len(), 3);
        let p = &r.peers[0];
        assert!(p.update_only && p.replace_allowed_ips && !p.remove);
        assert_eq!(p.preshared_key, Some(Some(Key::from_hex(PK2).unwrap())));
        assert_eq!(p.endpoint, Some("198.18.0.2:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert_eq!(
            p.allowed_ips,
            vec![
                AllowedIpChange::Add("203.0.113.10/32".parse().unwrap()),
                AllowedIpChange::Remove("10.0.0.0/8".parse().unwrap()),
                AllowedIpChange::Add("2001:db8::/64".parse().unwrap()),
            ]
        );
        assert!(r.peers[1].remove);
        assert_eq!(
            r.peers[2].endpoint,
            Some("[2001:db8::2]:443".parse().unwrap())
        );
    }

    #[test]
    fn every_bad_line_is_einval() {
        let cases = [
            "listen_port".to_string(),
            "bogus=1".to_string(),
            "private_key=abc".to_string(),
            format!("private_key={}", "x".repeat(64)),
            "listen_port=65536".to_string(),
            "listen_port=-1".to_string(),
            "listen_port=+5".to_string(),
            "listen_port=".to_string(),
            "fwmark=4294967296".to_string(),
            "replace_peers=yes".to_string(),
            "allowed_ip=10.0.0.0/8".to_string(),
            "endpoint=1.2.3.4:5".to_string(),
            format!("public_key={PK}\nendpoint=1.2.3.4"),
            format!("public_key={PK}\nendpoint=0.0.0.0:51820"),
            format!("public_key={PK}\nendpoint=198.18.0.1:0"),
            format!("public_key={PK}\nendpoint=host.example:51820"),
            format!("public_key={PK}\nallowed_ip=10.0.0.0/33"),
            format!("public_key={PK}\nallowed_ip=10.0.0.0"),
            format!("public_key={PK}\nallowed_ip=--10.0.0.0/8"),
            format!("public_key={PK}\npersistent_keepalive_interval=65536"),
            format!("public_key={PK}\nprotocol_version=2"),
            format!("public_key={PK}\nremove=1"),
            format!("public_key={PK}\nlisten_port=1"),
            format!("public_key={PK}\nprivate_key={PK}"),
            format!("public_key={PK}\nwhat=ever"),
            format!("public_key={PK}\npreshared_key=00"),
            "public_key=".to_string(),
            format!("public_key={}", &PK[..63]),
        ];
        for c in cases {
            let e = set(&c).expect_err(&c);
            assert_eq!(e.errno(), EINVAL, "{c}: {e}");
        }
    }
}

#[cfg(test)]
mod garbage {
    use super::*;

    /// Random lines built from the protocol's own vocabulary and junk: every outcome is a
    /// request or an error, never a panic.
    #[test]
    fn random_requests_never_panic() {
        let keys = [
            "private_key",
            "listen_port",
            "fwmark",
            "replace_peers",
            "public_key",
            "remove",
            "update_only",
            "preshared_key",
            "endpoint",
            "persistent_keepalive_interval",
            "replace_allowed_ips",
            "allowed_ip",
            "protocol_version",
            "",
            "=",
            "get",
            "set",
        ];
        let values = [
            "",
            "0",
            "1",
            "65535",
            "65536",
            "-1",
            "true",
            "false",
            "1.2.3.4:5",
            "[::1]:9",
            "10.0.0.0/8",
            "-10.0.0.0/8",
            "::/0",
            "ff",
            "\u{0}",
            "é",
            "9999999999999999999999",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let hexkey = "ab".repeat(32);
        for _ in 0..20_000 {
            let lines: Vec<String> = (0..next(8))
                .map(|_| {
                    let k = keys[next(keys.len())];
                    let v = if next(4) == 0 {
                        hexkey.as_str()
                    } else {
                        values[next(values.len())]
                    };
                    if next(10) == 0 {
                        format!("{k}{v}")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            let _ = parse_set(lines.iter().map(String::as_str));
        }
    }
}
