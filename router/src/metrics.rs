//! Prometheus `/metrics`: per-peer series named as prometheus_wireguard_exporter names them (so
//! existing dashboards work) and the router's own packet and drop counters.
//!
//! Values live in the device's atomics; each scrape copies them into the `metrics` registry and
//! renders it. Series of removed peers stop being refreshed and expire from the registry.

use crate::device::Device;
use crate::stats::DropReason;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Series not refreshed for this long (peers that were removed) disappear.
const EXPIRE_AFTER: Duration = Duration::from_secs(30);

pub struct Exporter {
    device: Arc<Device>,
    interface: String,
    per_peer: bool,
    handle: PrometheusHandle,
}

impl Exporter {
    /// Installs the global recorder. Call once.
    pub fn install(device: Arc<Device>, interface: String, per_peer: bool) -> io::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::ALL, Some(EXPIRE_AFTER))
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .map_err(|e| io::Error::other(format!("metrics recorder: {e}")))?;
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
        Ok(Exporter {
            device,
            interface,
            per_peer,
            handle,
        })
    }

    /// Copies current values into the registry and renders the exposition text.
    pub fn render(&self) -> String {
        let iface = self.interface.clone();
        let stats = &self.device.stats;
        gauge!("wireguard_peers", "interface" => iface.clone())
            .set(self.device.peer_count() as f64);
        for (path, c) in [
            ("tun_to_udp", &stats.tun_to_udp),
            ("udp_to_tun", &stats.udp_to_tun),
        ] {
            counter!("staticwire_router_packets_total", "interface" => iface.clone(), "path" => path)
                .absolute(c.get());
        }
        counter!("staticwire_router_handshakes_total", "interface" => iface.clone())
            .absolute(stats.handshakes.get());
        for reason in DropReason::ALL {
            counter!("staticwire_router_dropped_packets_total",
                "interface" => iface.clone(), "reason" => reason.as_str())
            .absolute(stats.dropped(reason));
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
        self.handle.render()
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
