//! Prometheus `/metrics`: per-peer series named as prometheus_wireguard_exporter names them (so
//! existing dashboards work) and the router's own packet and drop counters.
//!
//! Values live in the device's atomics; each scrape copies them into the `metrics` registry and
//! renders it. Series of removed peers stop being refreshed and expire from the registry.

use crate::device::Device;
use crate::stats::DropReason;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Series not refreshed for this long (peers that were removed) disappear.
const EXPIRE_AFTER: Duration = Duration::from_secs(30);

fn describe() {
    describe_counter!(
        "staticwire_router_handshake_initiations_total",
        "Handshake initiations received with a valid MAC1; failures show as drops (auth_failed, unknown_peer)"
    );
    describe_counter!(
        "staticwire_router_cookie_replies_total",
        "Cookie replies sent instead of handshake responses while under load"
    );
    describe_counter!(
        "staticwire_router_io_wakeups_total",
        "Times an I/O worker woke up with work (packets per wake-up = the batch size)"
    );
    describe_counter!(
        "staticwire_router_io_operations_total",
        "Kernel I/O operations per worker: TUN reads/writes, UDP receives/sends (what=...)"
    );
    describe_counter!(
        "staticwire_router_io_packets_total",
        "Packets those operations carried (more than the operations with TSO/GRO/GSO)"
    );
    describe_counter!("wireguard_sent_bytes_total", "Bytes sent to the peer");
    describe_counter!(
        "wireguard_received_bytes_total",
        "Bytes received from the peer"
    );
    describe_gauge!(
        "wireguard_latest_handshake_seconds",
        "Unix time of the peer's latest handshake (0 = never)"
    );
    describe_gauge!("wireguard_peers", "Configured peers");
    describe_gauge!(
        "staticwire_router_active_sessions",
        "Peers holding WireGuard session state now (the rest are compact records)"
    );
    describe_counter!(
        "staticwire_router_sessions_total",
        "Session states made on demand and dropped when idle, by event"
    );
    describe_counter!(
        "staticwire_router_packets_total",
        "Packets forwarded, by path"
    );
    describe_counter!(
        "staticwire_router_dropped_packets_total",
        "Packets dropped, by reason"
    );
    describe_counter!(
        "staticwire_router_handshakes_total",
        "WireGuard handshakes completed"
    );
}

pub struct Exporter {
    device: Arc<Device>,
    interface: String,
    per_peer: bool,
    /// Our own recorder, used locally around each update rather than installed globally, so
    /// nothing else in the process can write into the router's series.
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Exporter {
    pub fn new(device: Arc<Device>, interface: String, per_peer: bool) -> Self {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(EXPIRE_AFTER))
            .build_recorder();
        let handle = recorder.handle();
        let exporter = Exporter {
            device,
            interface,
            per_peer,
            recorder,
            handle,
        };
        metrics::with_local_recorder(&exporter.recorder, describe);
        exporter
    }

    /// Copies current values into the registry and renders the exposition text.
    pub fn render(&self) -> String {
        metrics::with_local_recorder(&self.recorder, || self.update());
        self.handle.render()
    }

    fn update(&self) {
        let iface = self.interface.clone();
        let stats = &self.device.stats;
        gauge!("wireguard_peers", "interface" => iface.clone())
            .set(self.device.peer_count() as f64);
        gauge!("staticwire_router_active_sessions", "interface" => iface.clone())
            .set(self.device.active_sessions() as f64);
        for (event, c) in [
            ("made", &self.device.sessions_made),
            ("dropped", &self.device.sessions_dropped),
        ] {
            counter!("staticwire_router_sessions_total", "interface" => iface.clone(), "event" => event)
                .absolute(c.get());
        }
        for (path, c) in [
            ("tun_to_udp", &stats.tun_to_udp),
            ("udp_to_tun", &stats.udp_to_tun),
        ] {
            counter!("staticwire_router_packets_total", "interface" => iface.clone(), "path" => path)
                .absolute(c.get());
        }
        counter!("staticwire_router_handshakes_total", "interface" => iface.clone())
            .absolute(stats.handshakes.get());
        counter!("staticwire_router_handshake_initiations_total", "interface" => iface.clone())
            .absolute(stats.handshake_initiations.get());
        counter!("staticwire_router_cookie_replies_total", "interface" => iface.clone())
            .absolute(stats.cookie_replies.get());
        for reason in DropReason::ALL {
            counter!("staticwire_router_dropped_packets_total",
                "interface" => iface.clone(), "reason" => reason.as_str())
            .absolute(stats.dropped(reason));
        }
        for w in stats.io_workers() {
            let l = |what: &'static str| {
                [
                    ("interface", iface.clone()),
                    ("worker", w.worker.clone()),
                    ("what", what.to_string()),
                ]
            };
            counter!("staticwire_router_io_wakeups_total", &l("wakeups")[..2])
                .absolute(w.wakeups.get());
            for (what, ops, packets) in [
                ("tun_read", &w.tun_frames_read, &w.tun_packets_read),
                ("udp_receive", &w.udp_receives, &w.udp_datagrams_received),
                ("udp_send", &w.udp_sends, &w.udp_datagrams_sent),
                ("tun_write", &w.tun_frames_written, &w.tun_packets_written),
            ] {
                counter!("staticwire_router_io_operations_total", &l(what)).absolute(ops.get());
                counter!("staticwire_router_io_packets_total", &l(what)).absolute(packets.get());
            }
        }
        if self.per_peer {
            for p in self.device.view().peers {
                let allowed = p
                    .allowed_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let labels = [
                    ("interface", iface.clone()),
                    ("public_key", p.public_key.to_base64()),
                    ("allowed_ips", allowed),
                ];
                counter!("wireguard_sent_bytes_total", &labels).absolute(p.tx_bytes);
                counter!("wireguard_received_bytes_total", &labels).absolute(p.rx_bytes);
                gauge!("wireguard_latest_handshake_seconds", &labels)
                    .set(p.last_handshake.0 as f64);
            }
        }
    }

    /// Serves `GET /metrics` on `addr` from a background thread.
    pub fn serve(self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Err(e) = self.answer(conn) {
                        tracing::debug!("metrics connection: {e}");
                    }
                }
            })?;
        Ok(bound)
    }

    fn answer(&self, mut conn: TcpStream) -> io::Result<()> {
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))?;
        // Read the request head (bounded); only its first line matters.
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        let first = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let (status, body) = if first.starts_with(b"GET /metrics ") {
            ("200 OK", self.render())
        } else {
            ("404 Not Found", "try /metrics\n".to_string())
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(reply.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::parse::parse_set;
    use std::time::Instant;

    struct NoNet;
    impl crate::device::NetControl for NoNet {
        fn rebind(&self, port: u16, _: u32) -> Result<u16, crate::uapi::UapiError> {
            Ok(port)
        }
    }

    fn device() -> Arc<Device> {
        let dev = Arc::new(Device::new());
        let req = format!(
            "public_key={}\nallowed_ip=203.0.113.10/32\nallowed_ip=203.0.113.11/32",
            crate::key::Key([5; 32]).to_hex()
        );
        dev.apply(Instant::now(), &parse_set(req.lines()).unwrap(), &NoNet)
            .unwrap();
        dev
    }

    #[test]
    fn per_peer_series_and_router_counters() {
        let text = Exporter::new(device(), "wg0".into(), true).render();
        let key = crate::key::Key([5; 32]).to_base64();
        let labels = format!(
            "interface=\"wg0\",public_key=\"{key}\",allowed_ips=\"203.0.113.10/32,203.0.113.11/32\""
        );
        for series in [
            "wireguard_sent_bytes_total",
            "wireguard_received_bytes_total",
            "wireguard_latest_handshake_seconds",
        ] {
            assert!(
                text.contains(&format!("{series}{{{labels}}} 0")),
                "{series}:\n{text}"
            );
        }
        assert!(text.contains("wireguard_peers{interface=\"wg0\"} 1"));
        assert!(text.contains("staticwire_router_dropped_packets_total{interface=\"wg0\",reason=\"spoofed_source\"} 0"));
        assert!(text.contains("# HELP wireguard_sent_bytes_total"));
    }

    #[test]
    fn per_peer_series_can_be_turned_off() {
        let text = Exporter::new(device(), "wg0".into(), false).render();
        assert!(!text.contains("public_key="), "{text}");
        assert!(text.contains("wireguard_peers{interface=\"wg0\"} 1"));
    }
}
