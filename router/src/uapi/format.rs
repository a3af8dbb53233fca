//! Serialization of `get=1` answers, in the field order wireguard-go uses.

use crate::device::DeviceView;
use std::fmt::Write;

/// The body of a `get=1` answer, including the final `errno=0` and empty line.
pub fn format_get(view: &DeviceView) -> String {
    let mut out = String::with_capacity(128 + view.peers.len() * 320);
    // `write!` to a String cannot fail.
    if let Some(k) = view.private_key {
        let _ = writeln!(out, "private_key={}", k.to_hex());
    }
    if view.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", view.listen_port);
    }
    if view.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", view.fwmark);
    }
    for p in &view.peers {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        let psk = p.preshared_key.unwrap_or_default();
        let _ = writeln!(out, "preshared_key={}", psk.to_hex());
        let _ = writeln!(out, "protocol_version=1");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let _ = writeln!(out, "last_handshake_time_sec={}", p.last_handshake.0);
        let _ = writeln!(out, "last_handshake_time_nsec={}", p.last_handshake.1);
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::PeerView;
    use crate::key::Key;

    #[test]
    fn golden_get() {
        let view = DeviceView {
            private_key: Some(Key([1; 32])),
            public_key: None,
            listen_port: 51820,
            fwmark: 0,
            peers: vec![
                PeerView {
                    public_key: Key([2; 32]),
                    preshared_key: None,
                    endpoint: Some("198.18.0.2:40000".parse().unwrap()),
                    last_handshake: (1_764_000_000, 123),
                    tx_bytes: 1000,
                    rx_bytes: 2000,
                    persistent_keepalive: 25,
                    allowed_ips: vec![
                        "203.0.113.10/32".parse().unwrap(),
                        "2001:db8::/64".parse().unwrap(),
                    ],
                },
                PeerView {
                    public_key: Key([3; 32]),
                    preshared_key: Some(Key([4; 32])),
                    endpoint: Some("[2001:db8::9]:51820".parse().unwrap()),
                    last_handshake: (0, 0),
                    tx_bytes: 0,
                    rx_bytes: 0,
                    persistent_keepalive: 0,
                    allowed_ips: vec![],
                },
            ],
        };
        let expected = "\
private_key=0101010101010101010101010101010101010101010101010101010101010101
listen_port=51820
public_key=0202020202020202020202020202020202020202020202020202020202020202
preshared_key=0000000000000000000000000000000000000000000000000000000000000000
protocol_version=1
endpoint=198.18.0.2:40000
last_handshake_time_sec=1764000000
last_handshake_time_nsec=123
tx_bytes=1000
rx_bytes=2000
persistent_keepalive_interval=25
allowed_ip=203.0.113.10/32
allowed_ip=2001:db8::/64
public_key=0303030303030303030303030303030303030303030303030303030303030303
preshared_key=0404040404040404040404040404040404040404040404040404040404040404
protocol_version=1
endpoint=[2001:db8::9]:51820
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
errno=0

";
        assert_eq!(format_get(&view), expected);
    }

    #[test]
    fn empty_device_is_just_errno() {
        assert_eq!(format_get(&DeviceView::default()), "errno=0\n\n");
    }
}
