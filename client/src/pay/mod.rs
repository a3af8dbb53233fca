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
    #[error("node unreachable: {0}")]
    Unreachable(String),
    #[error("payment failed: {0}")]
    Failed(String),
    #[error("bad node configuration: {0}")]
    Config(String),
    #[error("payment log: {0}")]
    Log(#[from] std::io::Error),
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
    /// `attempt`, `succeeded` or `failed`.
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

    /// Satoshis spent (or possibly spent: attempts without an outcome count) in the 30 days
    /// before `now`. Each payment hash counts once.
    pub fn spent_30_days(&self, now: u64) -> u64 {
        let mut by_hash: std::collections::HashMap<String, (u64, bool)> = Default::default();
        for e in self
            .entries()
            .into_iter()
            .filter(|e| e.at + 30 * 86_400 > now)
        {
            let slot = by_hash
                .entry(e.payment_hash)
                .or_insert((e.amount_sat, false));
            if e.status == "failed" {
                slot.1 = true;
            }
        }
        by_hash
            .values()
            .filter(|(_, failed)| !failed)
            .map(|(a, _)| a)
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

/// Pays `bolt11` through the configured node; returns the preimage (hex).
pub async fn pay(cfg: &PayConfig, cfg_path: &Path, bolt11: &str) -> Result<String, PayError> {
    match (&cfg.lnd, &cfg.cln) {
        (Some(l), _) => lnd::Lnd::new(l)?.pay(bolt11, cfg.autopay.max_fee_sat).await,
        (None, Some(c)) => cln::pay(&c.socket, bolt11, cfg.autopay.max_fee_sat).await,
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
}
