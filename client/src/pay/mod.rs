//! Paying through the customer's own Lightning node, within hard caps, with a log of every
//! attempt in the state dir.

pub mod cln;
pub mod lnd;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("no Lightning node configured for auto-pay (see [lnd] or [cln] in {0})")]
    NotConfigured(PathBuf),
    #[error("payment of {amount} sat is above the per-payment cap of {cap} sat")]
    OverPaymentCap { amount: u64, cap: u64 },
    #[error("payment of {amount} sat would bring the last 30 days to {total} sat, above the cap of {cap} sat")]
    Over30DayCap { amount: u64, total: u64, cap: u64 },
    /// Nothing was sent: the node could not be reached.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The node says the payment failed: no money left.
    #[error("payment failed: {0}")]
    Failed(String),
    /// The request reached the node but no final answer came back: the payment may still
    /// complete, so it counts against the caps until the node reports it failed.
    #[error("payment outcome unknown, it may still be in flight ({0}); it counts against the caps until your node reports it failed; run the command again to check")]
    InFlight(String),
    #[error("the node reported success, but its preimage {preimage} does not hash to the invoice's payment hash {payment_hash}")]
    BadPreimage {
        preimage: String,
        payment_hash: String,
    },
    #[error("bad node configuration: {0}")]
    Config(String),
    #[error("payment log: {0}")]
    Log(#[from] std::io::Error),
}

impl PayError {
    /// A problem on this machine (configuration, the log), not a payment that failed.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            PayError::NotConfigured(_) | PayError::Config(_) | PayError::Log(_)
        )
    }
}

/// What the node says about an earlier payment of a payment hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeView {
    Succeeded {
        preimage: String,
    },
    Failed(String),
    InFlight,
    /// The node has no payment of this hash: it never started.
    NotFound,
}

/// Checks the proof of payment: SHA-256 of the preimage is the payment hash.
pub fn check_preimage(preimage_hex: &str, payment_hash: &str) -> Result<(), PayError> {
    use bitcoin::hashes::{sha256, Hash};
    let bad = || PayError::BadPreimage {
        preimage: preimage_hex.to_string(),
        payment_hash: payment_hash.to_string(),
    };
    let bytes = hex::decode(preimage_hex.trim()).map_err(|_| bad())?;
    if bytes.len() != 32 || hex::encode(sha256::Hash::hash(&bytes).to_byte_array()) != payment_hash
    {
        return Err(bad());
    }
    Ok(())
}

/// Where a payment hash stands according to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    Succeeded,
    Failed,
    /// An attempt without a final outcome: may be in flight.
    Pending,
}

/// `config.toml` in the state dir.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayConfig {
    #[serde(default)]
    pub autopay: Caps,
    pub lnd: Option<lnd::LndConfig>,
    pub cln: Option<cln::ClnConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    /// Largest single payment.
    pub max_payment_sat: u64,
    /// Most paid in any 30 days.
    pub max_30_days_sat: u64,
    /// Routing fee allowed per payment.
    pub max_fee_sat: u64,
}

impl Default for Caps {
    fn default() -> Self {
        // One activation (72,000) or a few months of rent at the default terms.
        Caps {
            max_payment_sat: 100_000,
            max_30_days_sat: 150_000,
            max_fee_sat: 500,
        }
    }
}

impl PayConfig {
    pub fn load(path: &Path) -> Result<Self, PayError> {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                toml::from_str(&t).map_err(|e| PayError::Config(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PayConfig::default()),
            Err(e) => Err(PayError::Config(format!("{}: {e}", path.display()))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: u64,
    pub payment_hash: String,
    pub amount_sat: u64,
    pub server: String,
    pub public_key: String,
    /// `attempt`, `succeeded`, `failed` or `unknown` (no final answer: may be in flight).
    pub status: String,
    #[serde(default)]
    pub detail: String,
}

pub struct PaymentLog {
    path: PathBuf,
}

impl PaymentLog {
    pub fn new(path: PathBuf) -> Self {
        PaymentLog { path }
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn append(&self, e: &LogEntry) -> Result<(), PayError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(e).expect("json"))?;
        f.sync_all()?;
        Ok(())
    }

    /// Per payment hash: its standing, amount and the time of its latest entry. A success
    /// is final whatever came before or after (a failed attempt, then a paid retry); otherwise
    /// the latest entry decides, and anything but "failed" may still be in flight.
    pub fn standings(&self) -> std::collections::HashMap<String, (Logged, u64, u64)> {
        let mut by_hash: std::collections::HashMap<String, (Logged, u64, u64)> = Default::default();
        for e in self.entries() {
            let slot =
                by_hash
                    .entry(e.payment_hash)
                    .or_insert((Logged::Pending, e.amount_sat, e.at));
            slot.2 = slot.2.max(e.at);
            if slot.0 == Logged::Succeeded {
                continue;
            }
            slot.0 = match e.status.as_str() {
                "succeeded" => Logged::Succeeded,
                "failed" => Logged::Failed,
                _ => Logged::Pending,
            };
        }
        by_hash
    }

    pub fn standing(&self, payment_hash: &str) -> Option<Logged> {
        self.standings().get(payment_hash).map(|s| s.0)
    }

    /// Payment hashes of the last 30 days whose outcome the log does not know.
    pub fn pending(&self, now: u64) -> Vec<String> {
        self.standings()
            .into_iter()
            .filter(|(_, (s, _, at))| *s == Logged::Pending && at + 30 * 86_400 > now)
            .map(|(h, _)| h)
            .collect()
    }

    /// Satoshis spent, or possibly spent (outcome unknown), in the 30 days before `now`.
    /// Each payment hash counts once; only a failure the node reported does not count.
    pub fn spent_30_days(&self, now: u64) -> u64 {
        self.standings()
            .values()
            .filter(|(s, _, at)| *s != Logged::Failed && at + 30 * 86_400 > now)
            .map(|(_, amount, _)| amount)
            .sum()
    }
}

/// Refuses a payment the caps do not allow.
pub fn check_caps(
    caps: &Caps,
    log: &PaymentLog,
    amount_sat: u64,
    now: u64,
) -> Result<(), PayError> {
    if amount_sat > caps.max_payment_sat {
        return Err(PayError::OverPaymentCap {
            amount: amount_sat,
            cap: caps.max_payment_sat,
        });
    }
    let total = log.spent_30_days(now) + amount_sat;
    if total > caps.max_30_days_sat {
        return Err(PayError::Over30DayCap {
            amount: amount_sat,
            total,
            cap: caps.max_30_days_sat,
        });
    }
    Ok(())
}

/// Pays `bolt11` through the configured node; returns the preimage (hex), checked against
/// `payment_hash`.
pub async fn pay(
    cfg: &PayConfig,
    cfg_path: &Path,
    bolt11: &str,
    payment_hash: &str,
) -> Result<String, PayError> {
    let preimage = match (&cfg.lnd, &cfg.cln) {
        (Some(l), _) => lnd::Lnd::new(l)?.pay(bolt11, cfg.autopay.max_fee_sat).await,
        (None, Some(c)) => cln::pay(&c.socket, bolt11, cfg.autopay.max_fee_sat).await,
        (None, None) => Err(PayError::NotConfigured(cfg_path.to_path_buf())),
    }?;
    check_preimage(&preimage, payment_hash)?;
    Ok(preimage)
}

/// Asks the configured node about an earlier payment of `payment_hash` (LND
/// `GET /v2/router/track/{hash}`, CLN `listpays`).
pub async fn lookup(
    cfg: &PayConfig,
    cfg_path: &Path,
    payment_hash: &str,
) -> Result<NodeView, PayError> {
    match (&cfg.lnd, &cfg.cln) {
        (Some(l), _) => lnd::Lnd::new(l)?.track(payment_hash).await,
        (None, Some(c)) => cln::lookup(&c.socket, payment_hash).await,
        (None, None) => Err(PayError::NotConfigured(cfg_path.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_payment_and_per_30_days() {
        let dir = tempfile::tempdir().unwrap();
        let log = PaymentLog::new(dir.path().join("payments.log"));
        let caps = Caps {
            max_payment_sat: 80_000,
            max_30_days_sat: 100_000,
            max_fee_sat: 10,
        };
        assert!(matches!(
            check_caps(&caps, &log, 90_000, 0),
            Err(PayError::OverPaymentCap { .. })
        ));
        check_caps(&caps, &log, 72_000, 1_000).unwrap();
        let e = |hash: &str, at, status: &str| LogEntry {
            at,
            payment_hash: hash.into(),
            amount_sat: 72_000,
            server: "s".into(),
            public_key: "k".into(),
            status: status.into(),
            detail: String::new(),
        };
        log.append(&e("a", 1_000, "attempt")).unwrap();
        log.append(&e("a", 1_001, "succeeded")).unwrap();
        assert_eq!(log.spent_30_days(2_000), 72_000);
        assert!(matches!(
            check_caps(&caps, &log, 48_000, 2_000),
            Err(PayError::Over30DayCap { .. })
        ));
        // A failed payment does not count; 30 days later the first one no longer does.
        log.append(&e("b", 2_000, "attempt")).unwrap();
        log.append(&e("b", 2_001, "failed")).unwrap();
        assert_eq!(log.spent_30_days(3_000), 72_000);
        check_caps(&caps, &log, 72_000, 1_001 + 30 * 86_400).unwrap();
    }

    fn entry(hash: &str, at: u64, status: &str) -> LogEntry {
        LogEntry {
            at,
            payment_hash: hash.into(),
            amount_sat: 72_000,
            server: "s".into(),
            public_key: "k".into(),
            status: status.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn a_failed_attempt_then_a_paid_retry_counts() {
        let dir = tempfile::tempdir().unwrap();
        let log = PaymentLog::new(dir.path().join("payments.log"));
        for (at, status) in [
            (1_000, "attempt"),
            (1_001, "failed"),
            (1_100, "attempt"),
            (1_101, "succeeded"),
        ] {
            log.append(&entry("a", at, status)).unwrap();
        }
        assert_eq!(log.spent_30_days(2_000), 72_000);
        assert_eq!(log.standing("a"), Some(Logged::Succeeded));
    }

    #[test]
    fn an_unknown_outcome_counts_until_the_node_says_failed() {
        let dir = tempfile::tempdir().unwrap();
        let log = PaymentLog::new(dir.path().join("payments.log"));
        log.append(&entry("a", 1_000, "attempt")).unwrap();
        log.append(&entry("a", 1_120, "unknown")).unwrap();
        assert_eq!(log.spent_30_days(2_000), 72_000);
        assert_eq!(log.pending(2_000), vec!["a".to_string()]);
        log.append(&entry("a", 1_500, "failed")).unwrap();
        assert_eq!(log.spent_30_days(2_000), 0);
        assert!(log.pending(2_000).is_empty());
    }

    #[test]
    fn preimages_must_hash_to_the_payment_hash() {
        use bitcoin::hashes::{sha256, Hash};
        let preimage = [7u8; 32];
        let hash = hex::encode(sha256::Hash::hash(&preimage).to_byte_array());
        check_preimage(&hex::encode(preimage), &hash).unwrap();
        assert!(matches!(
            check_preimage(&"ab".repeat(32), &hash),
            Err(PayError::BadPreimage { .. })
        ));
        assert!(check_preimage("zz", &hash).is_err());
    }
}
