//! Lightning backends behind one interface: create an invoice, ask about it.
//!
//! `dev` signs real BOLT11 invoices with a local node key and is settled by
//! `staticwire-control dev-pay`; `lnd` and `cln` talk to real nodes.

pub mod cln;
pub mod dev;
pub mod lnd;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LnError {
    #[error("lightning backend unreachable: {0}")]
    Unreachable(String),
    #[error("lightning backend refused: {0}")]
    Refused(String),
    #[error("lightning backend answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Dev(String),
}

/// An invoice the backend created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoice {
    pub bolt11: String,
    /// Lowercase hex.
    pub payment_hash: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Settled {
        at: i64,
    },
    /// Expired or canceled: can no longer be paid.
    Gone,
}

pub enum Backend {
    Dev(dev::DevNode),
    Lnd(lnd::Lnd),
    Cln(cln::Cln),
}

impl Backend {
    pub async fn create_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry: Duration,
        now: i64,
    ) -> Result<NewInvoice, LnError> {
        match self {
            Backend::Dev(d) => d.create_invoice(amount_msat, description, expiry, now),
            Backend::Lnd(l) => l.create_invoice(amount_msat, description, expiry).await,
            Backend::Cln(c) => c.create_invoice(amount_msat, description, expiry).await,
        }
    }

    pub async fn status(&self, payment_hash: &str, now: i64) -> Result<Status, LnError> {
        match self {
            Backend::Dev(d) => d.status(payment_hash, now),
            Backend::Lnd(l) => l.status(payment_hash).await,
            Backend::Cln(c) => c.status(payment_hash).await,
        }
    }

    /// Streams settlements `(payment hash hex, settled at)` into `tx` where the backend can
    /// push them (LND's invoice subscription, CLN's `waitanyinvoice`), reconnecting with backoff
    /// for as long as `tx` is open. The dev backend has nothing to stream: its invoices are
    /// settled in the same database the poll reads.
    pub async fn stream_settlements(&self, tx: tokio::sync::mpsc::Sender<(String, i64)>) {
        let mut backoff = Duration::from_secs(1);
        while !tx.is_closed() {
            let result = match self {
                Backend::Dev(_) => return,
                Backend::Lnd(l) => l.subscribe(&tx).await,
                Backend::Cln(c) => c.wait_any(&tx).await,
            };
            if let Err(e) = result {
                tracing::warn!(
                    "settlement stream: {e}; reconnecting in {} s",
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            } else {
                backoff = Duration::from_secs(1);
            }
        }
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), LnError> {
        match self {
            Backend::Dev(_) => Ok(()),
            Backend::Lnd(l) => l.ping().await,
            Backend::Cln(c) => c.ping().await,
        }
    }
}

#[cfg(test)]
mod standin_tests;
