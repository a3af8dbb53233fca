//! Configuration: a TOML file whose every field has a default, so `staticwire-control serve`
//! runs out of the box (SQLite in the data dir, the dev Lightning backend, one router).
//! Every section's type lives here (`[limits]`, `[web]` too), so the config is a leaf: it
//! imports nothing of the control but the network names.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP API address.
    pub listen: SocketAddr,
    /// Where the database, keys and the dev node live.
    pub data_dir: PathBuf,
    /// The database: unset for SQLite in the data dir (one host), or `postgres://...` for
    /// PostgreSQL, which several control replicas and router hosts share.
    pub database: Option<String>,
    pub terms: TermsConfig,
    pub lightning: LightningConfig,
    pub routers: Vec<RouterConfig>,
    /// Seconds between full compares with every router (changes are sent as they happen; a
    /// restarted router is compared when its socket appears).
    pub reconcile_interval_secs: u64,
    /// Milliseconds between checks of a young open invoice with the backend while its
    /// settlement stream is down (while it is up, 10 s: the check is its safety net); older
    /// ones are checked less often (up to every 30 s), each at its expiry. Also how often
    /// the dev node's settlement stream is read.
    pub invoice_poll_millis: u64,
    /// HTTPS (self-signed, pinned by fingerprint) serving the original StaticWire client's
    /// protocol beside `/v1`. Off unless `listen` is set.
    pub compat: CompatConfig,
    /// Per-client request rates, unpaid holds, connections, sizes and timeouts.
    pub limits: LimitsConfig,
    /// Prometheus `/metrics`. Off unless `listen` is set.
    pub metrics: MetricsConfig,
    /// The public web page at `/`.
    pub web: WebConfig,
    /// Refuse `/v1` requests on a rental that carry no proof of key possession (PROTOCOL.md
    /// 3.1). Default true. A proof that is sent is always checked; false is a deliberate
    /// downgrade that serves 1.0 clients' unproven requests again (anyone naming a key acts on
    /// its rental): for a provider's move to 1.1 only, never on a public service.
    pub require_proof: bool,
    /// Reverse DNS of the rented addresses, set by the customers (`crate::rdns`). Off unless
    /// `server` is set.
    pub rdns: RdnsConfig,
}

/// `[rdns]`: the provider's reverse zones on its authoritative DNS server, changed with RFC 2136
/// UPDATEs signed with TSIG, and the resolver that confirms the customers' names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RdnsConfig {
    /// The primary server that takes the UPDATEs and allows the zone transfers (TCP), e.g.
    /// "192.0.2.53:53". None: no reverse DNS (the `/ptr` routes answer 404).
    pub server: Option<SocketAddr>,
    /// The resolver that checks a name's A/AAAA records before its PTR is set (forward
    /// confirmation); default: `server`.
    pub resolver: Option<SocketAddr>,
    /// The TSIG key as `tsig-keygen` writes it (`key "name" { algorithm hmac-sha256; secret
    /// "..."; };`), kept secret (0600); the same file is included in the server's config.
    pub tsig_key_file: Option<PathBuf>,
    /// The reverse zones the control writes, each covering a network of the pools.
    pub zones: Vec<RdnsZoneConfig>,
    /// The provider's default name of an IPv4 pool address that has no customer name:
    /// `{a}`..`{d}` are its octets, e.g. "{a}-{b}-{c}-{d}.pool.example.net". None: no record.
    pub default_ipv4: Option<String>,
    /// TTL of the PTR records it writes.
    pub ttl: u32,
    /// Seconds between full compares of the zones with what the control wants (also run at
    /// start and after a failed update).
    pub compare_interval_secs: u64,
    /// How many addresses inside a rental's IPv6 prefix may have a name.
    pub max_ipv6_names: u32,
    /// A second `/v1` listener on an address on the provider's side of the tunnels (reached
    /// through the router, whose anti-spoofing guarantees each source address): there a
    /// rental's own tunnel may set its reverse DNS (PROTOCOL.md, Reverse DNS). e.g. "198.18.2.1:8421".
    pub tunnel_listen: Option<SocketAddr>,
}

/// One reverse zone: `zone` (its origin, e.g. "113.0.203.in-addr.arpa." or, delegated by RFC
/// 2317, "8-29.113.0.203.in-addr.arpa.") holds the PTRs of the addresses of `network`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdnsZoneConfig {
    pub zone: String,
    pub network: ipnet::IpNet,
    /// The owner name of an IPv4 address's PTR, `{a}`..`{d}` its octets: for RFC 2317
    /// delegation e.g. "{d}.8-29.113.0.203.in-addr.arpa."; default the standard
    /// "{d}.{c}.{b}.{a}.in-addr.arpa.". IPv6 owners are always the standard nibble names.
    #[serde(default)]
    pub owner: Option<String>,
}

impl Default for RdnsConfig {
    fn default() -> Self {
        RdnsConfig {
            server: None,
            resolver: None,
            tsig_key_file: None,
            zones: Vec::new(),
            default_ipv4: None,
            ttl: 3600,
            compare_interval_secs: 600,
            max_ipv6_names: 16,
            tunnel_listen: None,
        }
    }
}

impl RdnsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(_) = self.server else {
            return Ok(());
        };
        let bad = |m: String| Err(ConfigError::Invalid(format!("rdns: {m}")));
        if self.tsig_key_file.is_none() {
            return bad("server is set but tsig_key_file is not".into());
        }
        if self.zones.is_empty() {
            return bad("server is set but no [[rdns.zones]]".into());
        }
        if self.compare_interval_secs == 0 {
            return bad("compare_interval_secs must be positive".into());
        }
        for z in &self.zones {
            if let (ipnet::IpNet::V6(_), Some(_)) = (z.network, &z.owner) {
                return bad(format!(
                    "zone {}: owner templates are for IPv4 networks only",
                    z.zone
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// e.g. "127.0.0.1:9587"; keep it on loopback (or behind a firewall): the figures are the
    /// business's.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// e.g. "0.0.0.0:8443".
    pub listen: Option<SocketAddr>,
    /// Smallest credit a new AddCredit rental may start with (on top of the activation fee).
    pub minimum_initial_credit_sat: u64,
    /// Smallest top-up.
    pub min_regular_payment_sat: u64,
    /// Most credit a rental may hold.
    pub maximum_credit_sat: u64,
    /// Serve the original clients, which cannot prove they hold their key (anyone naming a key
    /// acts on its rental here, as before v1.1). Default true; false refuses every call that
    /// names a key.
    pub accept_unproven: bool,
}

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig {
            listen: None,
            minimum_initial_credit_sat: 1_000,
            min_regular_payment_sat: 500,
            maximum_credit_sat: 150_000,
            accept_unproven: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TermsConfig {
    pub activation_sat: u64,
    pub monthly_sat: u64,
    pub month_days: u64,
    pub reservation_months: u64,
    pub invoice_expiry_secs: u64,
    /// Days a released address rests before it is rented again.
    pub cooldown_days: u64,
    pub max_months: u32,
    /// IPv4 prefix lengths customers may rent besides a single address (/32): any of
    /// 31, 30, 29.
    pub prefix_lengths: Vec<u8>,
    /// Rent per month of every address of a prefix beyond its first; default `monthly_sat`
    /// (a /30 then costs four times a /32 a month, with one activation fee).
    pub address_monthly_sat: Option<u64>,
    /// Extra rent per month for a rental's IPv6 prefix; 0 gives it with every rental on a
    /// host that has an IPv6 pool.
    pub ipv6_monthly_sat: u64,
    /// Per-rental bandwidth cap in bits per second, enforced by the router (token bucket).
    /// Unset: no cap, and nothing is sent.
    pub rate_limit_bps: Option<u64>,
    /// Per-rental packet-rate cap in packets per second. Unset: no cap.
    pub rate_limit_pps: Option<u64>,
    /// Drop each rental's outbound SMTP (TCP port 25) at the router. Off by default.
    pub block_smtp: bool,
    /// Rent per month of an IPv6-only rental (no IPv4 address); unset: not sold.
    pub ipv6_only_monthly_sat: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum LightningConfig {
    /// Built-in backend: real signed regtest invoices, settled with `staticwire-control dev-pay`.
    Dev,
    /// `network`, when given, must match the node's (checked at start); without it the
    /// node's is used.
    Lnd {
        /// e.g. https://127.0.0.1:8080
        url: String,
        macaroon: PathBuf,
        tls_cert: PathBuf,
        #[serde(default)]
        network: Option<String>,
    },
    Cln {
        /// lightning-rpc socket, e.g. ~/.lightning/bitcoin/lightning-rpc
        socket: PathBuf,
        #[serde(default)]
        network: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// A name for logs and the database.
    #[serde(default = "default_router_name")]
    pub name: String,
    /// The router's UAPI socket.
    pub socket: PathBuf,
    /// The uid the router runs as, when neither root nor the control's own: only a process
    /// of one of these may serve the socket (it is sent the router's private key).
    #[serde(default)]
    pub socket_uid: Option<u32>,
    /// `host:port` customers connect to.
    pub endpoint: String,
    /// UDP port the router listens on.
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Pools of rentable addresses; network and broadcast addresses of pools shorter than /31
    /// are never handed out.
    pub pools: Vec<Ipv4Net>,
    /// Addresses inside the pools that must not be rented (gateways, the provider's own).
    #[serde(default)]
    pub reserved: Vec<Ipv4Addr>,
    /// WireGuard private key file (base64); generated on first start if missing.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The IPv6 pool routed to this router (e.g. a /48); each rental gets one prefix of
    /// `ipv6_prefix_len` from it.
    #[serde(default)]
    pub ipv6_pool: Option<Ipv6Net>,
    /// 64 (default) or 56.
    #[serde(default = "default_ipv6_prefix_len")]
    pub ipv6_prefix_len: u8,
}

fn default_ipv6_prefix_len() -> u8 {
    64
}

fn default_router_name() -> String {
    "wg0".into()
}

fn default_port() -> u16 {
    51820
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8420".parse().expect("valid"),
            data_dir: PathBuf::from("/var/lib/staticwire"),
            database: None,
            terms: TermsConfig::default(),
            lightning: LightningConfig::Dev,
            routers: vec![RouterConfig {
                name: default_router_name(),
                socket: PathBuf::from("/var/run/wireguard/wg0.sock"),
                socket_uid: None,
                endpoint: "198.18.0.1:51820".into(),
                listen_port: default_port(),
                pools: vec!["203.0.113.0/24".parse().expect("valid")],
                reserved: vec!["203.0.113.1".parse().expect("valid")],
                private_key_file: None,
                ipv6_pool: None,
                ipv6_prefix_len: default_ipv6_prefix_len(),
            }],
            reconcile_interval_secs: 300,
            invoice_poll_millis: 200,
            compat: CompatConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            web: WebConfig::default(),
            require_proof: true,
            rdns: RdnsConfig::default(),
        }
    }
}

impl Default for TermsConfig {
    fn default() -> Self {
        TermsConfig {
            activation_sat: 48_000,
            monthly_sat: 24_000,
            month_days: 30,
            reservation_months: 2,
            invoice_expiry_secs: 3600,
            cooldown_days: 7,
            max_months: 12,
            prefix_lengths: vec![31, 30, 29],
            address_monthly_sat: None,
            ipv6_monthly_sat: 0,
            rate_limit_bps: None,
            rate_limit_pps: None,
            block_smtp: false,
            ipv6_only_monthly_sat: None,
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let cfg = match path {
            None => Config::default(),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.into(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(p.into(), e))?
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.terms;
        if t.monthly_sat == 0 || t.month_days == 0 || t.max_months == 0 {
            return Err(ConfigError::Invalid(
                "terms: monthly_sat, month_days and max_months must be positive".into(),
            ));
        }
        if !(60..=7 * 86_400).contains(&t.invoice_expiry_secs) {
            return Err(ConfigError::Invalid(
                "terms.invoice_expiry_secs must be between 60 and 604800".into(),
            ));
        }
        if t.rate_limit_bps == Some(0) || t.rate_limit_pps == Some(0) {
            return Err(ConfigError::Invalid(
                "terms.rate_limit_bps and rate_limit_pps must be above zero (leave them out for no cap)"
                    .into(),
            ));
        }
        if self.routers.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one [[routers]] is needed".into(),
            ));
        }
        if let Some(l) = t.prefix_lengths.iter().find(|l| !(29..=32).contains(*l)) {
            return Err(ConfigError::Invalid(format!(
                "terms.prefix_lengths: /{l} is not one of 29, 30, 31, 32"
            )));
        }
        self.limits.validate()?;
        self.web.validate()?;
        self.rdns.validate()?;
        if let Some(n) = self.network() {
            if crate::network::normalize_network(n).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "lightning.network {n:?} is not one of bitcoin, testnet, signet, regtest"
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.routers {
            if !names.insert(&r.name) {
                return Err(ConfigError::Invalid(format!(
                    "router name {} twice",
                    r.name
                )));
            }
            if r.pools.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "router {} has no pools",
                    r.name
                )));
            }
            if let Some(pool) = r.ipv6_pool {
                if ![56, 64].contains(&r.ipv6_prefix_len) || pool.prefix_len() > r.ipv6_prefix_len {
                    return Err(ConfigError::Invalid(format!(
                        "router {}: ipv6_prefix_len must be 64 or 56 and not shorter than its ipv6_pool {pool}",
                        r.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The prefix lengths on sale, /32 first.
    pub fn prefix_lengths(&self) -> Vec<u8> {
        let mut l = self.terms.prefix_lengths.clone();
        l.push(32);
        l.sort_unstable_by(|a, b| b.cmp(a));
        l.dedup();
        l
    }

    pub fn month_secs(&self) -> i64 {
        (self.terms.month_days * 86_400) as i64
    }

    /// The configured network, if any (the dev backend's is regtest).
    pub fn network(&self) -> Option<&str> {
        match &self.lightning {
            LightningConfig::Dev => Some("regtest"),
            LightningConfig::Lnd { network, .. } | LightningConfig::Cln { network, .. } => {
                network.as_deref()
            }
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("staticwire.sqlite")
    }

    /// The database URL `database` names, or the SQLite file in the data dir.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) if !url.is_empty() => url.clone(),
            _ => self.db_path().display().to_string(),
        }
    }

    /// Whether the database is PostgreSQL (shared by replicas) rather than a SQLite file.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url())
    }

    pub fn key_file(&self, router: &RouterConfig) -> PathBuf {
        router
            .private_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(format!("{}.key", router.name)))
    }
}

/// Whether a database URL names PostgreSQL (anything else is a SQLite file).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `[limits]` in the control's configuration; every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests a client may send at once on any route...
    pub burst: u32,
    /// ...refilled at this many per second.
    pub per_second: f64,
    /// Requests that make an invoice (rent, renew, AddCredit) a client may send at once...
    pub invoice_burst: u32,
    /// ...refilled at this many per minute.
    pub invoices_per_minute: f64,
    /// IPv4 addresses one client prefix may hold unpaid at a time, over every host (a /29
    /// counts 8; an IPv6-only hold counts 1, for the IPv6 prefix it takes).
    pub max_unpaid_per_client: u32,
    /// The length of an IPv4 client prefix for `max_unpaid_per_client` (default /24).
    pub client_prefix_v4: u8,
    /// The length of an IPv6 client prefix for `max_unpaid_per_client` (default /48; at most
    /// /64, the rate limits' client).
    pub client_prefix_v6: u8,
    /// The share of each host's addresses not paid for (free or held unpaid) that `/v1`
    /// clients may hold unpaid; beyond it a new hold takes over the oldest hold of the client
    /// prefix holding the most. The same share bounds the host's IPv6 prefixes.
    pub max_unpaid_share: f64,
    /// The same for the original client's listener (`[compat]`), on its own: neither
    /// listener's holds can take the other's share.
    pub compat_unpaid_share: f64,
    /// Open connections per client.
    pub max_connections_per_client: usize,
    /// Open connections in total, per listener.
    pub max_connections: usize,
    /// Seconds a request head may take to arrive (also the keep-alive idle limit).
    pub header_timeout_secs: u64,
    /// Seconds a request body may take to arrive.
    pub body_timeout_secs: u64,
    /// Seconds a request may take in all (above the 60 s invoice long-poll).
    pub request_timeout_secs: u64,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` is believed (e.g.
    /// `["127.0.0.1/32"]`): behind one, the client is the rightmost address in it that is not
    /// a trusted proxy. From any other sender those headers are ignored. A trusted proxy's
    /// connections count against the listener's total only, not per client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            burst: 120,
            per_second: 20.0,
            invoice_burst: 20,
            invoices_per_minute: 20.0,
            max_unpaid_per_client: 8,
            client_prefix_v4: 24,
            client_prefix_v6: 48,
            max_unpaid_share: 0.5,
            compat_unpaid_share: 0.25,
            max_connections_per_client: 64,
            max_connections: 4096,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            request_timeout_secs: 90,
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.per_second > 0.0 && self.invoices_per_minute > 0.0) {
            return Err(ConfigError::Invalid(
                "limits: rates must be above zero".into(),
            ));
        }
        if self.burst == 0 || self.invoice_burst == 0 || self.max_unpaid_per_client == 0 {
            return Err(ConfigError::Invalid(
                "limits: bursts and max_unpaid_per_client must be at least 1".into(),
            ));
        }
        if !(1..=32).contains(&self.client_prefix_v4) || !(1..=64).contains(&self.client_prefix_v6)
        {
            return Err(ConfigError::Invalid(
                "limits: client_prefix_v4 must be 1 to 32, client_prefix_v6 1 to 64".into(),
            ));
        }
        let share = |s: f64| s > 0.0 && s <= 1.0;
        if !share(self.max_unpaid_share)
            || !share(self.compat_unpaid_share)
            || self.max_unpaid_share + self.compat_unpaid_share > 1.0
        {
            return Err(ConfigError::Invalid(
                "limits: max_unpaid_share and compat_unpaid_share must be above 0 and add up to at most 1"
                    .into(),
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err(ConfigError::Invalid(
                "limits: connection limits must be at least 1".into(),
            ));
        }
        if self.header_timeout_secs == 0 || self.body_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "limits: timeouts must be at least 1 second".into(),
            ));
        }
        if self.request_timeout_secs <= 60 {
            return Err(ConfigError::Invalid(
                "limits: request_timeout_secs must exceed the 60 s long-poll".into(),
            ));
        }
        Ok(())
    }
}

/// Languages the page is translated into; `[web] languages` picks among them.
pub const LANGUAGES: [&str; 2] = ["en", "de"];

/// `[web]` in the control's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the page at `/` (the API answers either way).
    pub enabled: bool,
    /// Offered languages, the first being the default for browsers that ask for none of them.
    pub languages: Vec<String>,
    /// The provider's name, shown as the page's title.
    pub name: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            languages: LANGUAGES.iter().map(|l| l.to_string()).collect(),
            name: "StaticWire".into(),
        }
    }
}

impl WebConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.languages.is_empty() {
            return Err(ConfigError::Invalid(
                "web.languages needs at least one language".into(),
            ));
        }
        for l in &self.languages {
            if !LANGUAGES.contains(&l.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "web.languages: no translation for {l:?} (available: {})",
                    LANGUAGES.join(", ")
                )));
            }
        }
        let n = self.name.chars().count();
        if n == 0 || n > 80 || self.name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(
                "web.name must be 1 to 80 printable characters".into(),
            ));
        }
        Ok(())
    }
}

impl TermsConfig {
    /// The per-peer UAPI lines of the configured per-rental limits, sent with every
    /// admission; empty when none is configured, so a router without these keys is not
    /// asked to understand them.
    pub fn peer_limit_lines(&self) -> String {
        let mut out = String::new();
        if let Some(bps) = self.rate_limit_bps {
            out.push_str(&format!("rate_limit_bps={bps}\n"));
        }
        if let Some(pps) = self.rate_limit_pps {
            out.push_str(&format!("rate_limit_pps={pps}\n"));
        }
        if self.block_smtp {
            out.push_str("block_smtp=true\n");
        }
        out
    }

    /// Every per-peer limit line, an unset one as its "none" (0, false): what a peer that may
    /// hold older limits is sent when the terms' limits changed.
    pub fn peer_limit_lines_all(&self) -> String {
        format!(
            "rate_limit_bps={}\nrate_limit_pps={}\nblock_smtp={}\n",
            self.rate_limit_bps.unwrap_or(0),
            self.rate_limit_pps.unwrap_or(0),
            self.block_smtp
        )
    }
}

impl RouterConfig {
    /// Every rentable address of this router's pools, in order.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        for pool in &self.pools {
            // ipnet's hosts() leaves out the network and broadcast addresses below /31.
            for a in pool.hosts() {
                if !self.reserved.contains(&a) {
                    out.push(a);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_exclude_reserved_and_edges() {
        let c = Config::default();
        c.validate().unwrap();
        let a = c.routers[0].addresses();
        assert_eq!(a.len(), 253);
        assert!(!a.contains(&"203.0.113.0".parse().unwrap()));
        assert!(!a.contains(&"203.0.113.1".parse().unwrap()));
        assert!(!a.contains(&"203.0.113.255".parse().unwrap()));
        assert_eq!(c.month_secs(), 30 * 86_400);
    }

    #[test]
    fn toml_with_every_section() {
        let c: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            data_dir = "/tmp/x"
            [terms]
            monthly_sat = 1000
            [lightning]
            backend = "cln"
            socket = "/tmp/rpc"
            [[routers]]
            name = "a"
            socket = "/tmp/a.sock"
            endpoint = "198.18.0.1:51820"
            pools = ["203.0.113.8/29"]
            reserved = ["203.0.113.9"]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.terms.monthly_sat, 1000);
        assert_eq!(c.terms.activation_sat, 48_000);
        assert_eq!(c.network(), None, "taken from the node at start");
        assert_eq!(c.routers[0].addresses().len(), 5);
        assert_eq!(c.metrics.listen, None, "metrics are off by default");
        let c: Config = toml::from_str("[metrics]\nlisten = \"127.0.0.1:9587\"").unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9587".parse().unwrap()));
    }

    #[test]
    fn per_rental_limits_are_sent_only_when_configured() {
        assert_eq!(Config::default().terms.peer_limit_lines(), "");
        let c: Config = toml::from_str(
            "[terms]\nrate_limit_bps = 100000000\nrate_limit_pps = 20000\nblock_smtp = true",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.terms.peer_limit_lines(),
            "rate_limit_bps=100000000\nrate_limit_pps=20000\nblock_smtp=true\n"
        );
        let c: Config = toml::from_str("[terms]\nrate_limit_pps = 500").unwrap();
        assert_eq!(c.terms.peer_limit_lines(), "rate_limit_pps=500\n");
        let c: Config = toml::from_str("[terms]\nrate_limit_bps = 0").unwrap();
        assert!(
            c.validate().is_err(),
            "zero is refused, not taken as no cap"
        );
        assert!(toml::from_str::<Config>("[terms]\nblock_smtp = \"yes\"").is_err());
        assert!(toml::from_str::<Config>("[terms]\nrate_limit_bps = -1").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let mut c = Config::default();
        c.terms.monthly_sat = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.routers.clear();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str(
            "[lightning]\nbackend = \"cln\"\nsocket = \"/x\"\nnetwork = \"litecoin\"",
        )
        .unwrap();
        assert!(c.validate().is_err());
    }
}
