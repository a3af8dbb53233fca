//! Checking an invoice before it is shown or paid: it must be a valid BOLT11 invoice on the
//! provider's network, for exactly what the published terms charge for this action, not expired,
//! the one the server says it is, and payable to the node the terms name, if they name one.

use bitcoin::hashes::Hash;
use lightning_invoice::{Bolt11Invoice, Currency};
use staticwire_api::{Invoice, Terms};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Activation plus the first month.
    Rent,
    /// `months` asked for, plus `owed` months of back payments the rental showed before.
    Renew { months: u32, owed: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvoiceError {
    #[error("not a valid BOLT11 invoice: {0}")]
    Malformed(String),
    #[error("invoice signature does not verify")]
    BadSignature,
    #[error("invoice is for network {got}, the provider's terms say {expected}")]
    WrongNetwork { expected: String, got: String },
    #[error("invoice has no amount")]
    NoAmount,
    #[error("invoice asks {got} sat, the terms allow {expected} sat for this")]
    WrongAmount { expected: u64, got: u64 },
    #[error("invoice is for {got} months, expected {expected}")]
    WrongMonths { expected: u32, got: u32 },
    #[error("invoice expired")]
    Expired,
    #[error("invoice expiry of {0} s is longer than the terms' {1} s")]
    ExpiryTooLong(u64, u64),
    #[error("the server's payment hash does not match the invoice's")]
    HashMismatch,
    #[error("invoice is payable to node {got}, the provider's terms name {expected}")]
    WrongPayee { expected: String, got: String },
}

fn network_of(c: Currency) -> &'static str {
    match c {
        Currency::Bitcoin => "bitcoin",
        Currency::BitcoinTestnet => "testnet",
        Currency::Regtest => "regtest",
        Currency::Simnet => "simnet",
        Currency::Signet => "signet",
    }
}

/// A checked invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub amount_sat: u64,
    pub payment_hash: String,
    pub expires_at: u64,
}

/// What a rental holds, which sets its monthly rent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// IPv4 prefix length (32: one address).
    pub prefix_len: u8,
    /// Whether the customer pays for an IPv6 prefix.
    pub ipv6: bool,
    /// False for an IPv6-only rental (priced on its own).
    pub ipv4: bool,
}

#[cfg(test)]
impl Shape {
    pub const SINGLE: Shape = Shape {
        prefix_len: 32,
        ipv6: false,
        ipv4: true,
    };
}

/// [`check_for`] of a single address without paid IPv6.
#[cfg(test)]
pub fn check(
    bolt11: &str,
    server_view: &Invoice,
    terms: &Terms,
    action: Action,
    now: u64,
) -> Result<Checked, InvoiceError> {
    check_for(bolt11, server_view, terms, action, Shape::SINGLE, now)
}

/// Checks an invoice for `action` on a rental of `shape`, priced by the published terms.
pub fn check_for(
    bolt11: &str,
    server_view: &Invoice,
    terms: &Terms,
    action: Action,
    shape: Shape,
    now: u64,
) -> Result<Checked, InvoiceError> {
    let inv: Bolt11Invoice = bolt11
        .trim()
        .parse()
        .map_err(|e| InvoiceError::Malformed(format!("{e}")))?;
    inv.check_signature()
        .map_err(|_| InvoiceError::BadSignature)?;
    if let Some(expected) = &terms.payee {
        let got = inv.recover_payee_pub_key().to_string();
        if !got.eq_ignore_ascii_case(expected.trim()) {
            return Err(InvoiceError::WrongPayee {
                expected: expected.clone(),
                got,
            });
        }
    }
    let got = network_of(inv.currency());
    if got != terms.network {
        return Err(InvoiceError::WrongNetwork {
            expected: terms.network.clone(),
            got: got.into(),
        });
    }
    let msat = inv.amount_milli_satoshis().ok_or(InvoiceError::NoAmount)?;
    let monthly = match (shape.ipv4, terms.ipv6_only_monthly_sat) {
        (false, Some(price)) => price,
        _ => terms.monthly_for(shape.prefix_len, shape.ipv6),
    };
    let (expected_sat, expected_months) = match action {
        Action::Rent => (terms.activation_sat.saturating_add(monthly), 1),
        Action::Renew { months, owed } => {
            let total = months + owed;
            (monthly.saturating_mul(u64::from(total)), total)
        }
    };
    if server_view.months != expected_months {
        return Err(InvoiceError::WrongMonths {
            expected: expected_months,
            got: server_view.months,
        });
    }
    if msat != expected_sat * 1000 || server_view.amount_sat != expected_sat {
        return Err(InvoiceError::WrongAmount {
            expected: expected_sat,
            got: msat / 1000,
        });
    }
    let expiry = inv.expiry_time().as_secs();
    if expiry > terms.invoice_expiry_seconds + 60 {
        return Err(InvoiceError::ExpiryTooLong(
            expiry,
            terms.invoice_expiry_seconds,
        ));
    }
    if inv.would_expire(Duration::from_secs(now)) {
        return Err(InvoiceError::Expired);
    }
    let hash = hex::encode(inv.payment_hash().to_byte_array());
    if hash != server_view.payment_hash {
        return Err(InvoiceError::HashMismatch);
    }
    Ok(Checked {
        amount_sat: expected_sat,
        payment_hash: hash,
        expires_at: (inv.duration_since_epoch() + inv.expiry_time()).as_secs(),
    })
}
