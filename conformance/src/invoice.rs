//! The checks a client must make on an invoice before paying it (PROTOCOL.md, "Invoice
//! checks"), applied to what the server under test hands out.

use bitcoin::hashes::Hash;
use lightning_invoice::{Bolt11Invoice, Currency};
use staticwire_api::Terms;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn network_of(c: Currency) -> &'static str {
    match c {
        Currency::Bitcoin => "bitcoin",
        Currency::BitcoinTestnet => "testnet",
        Currency::Regtest => "regtest",
        Currency::Simnet => "simnet",
        Currency::Signet => "signet",
    }
}

/// Slack allowed between the terms' invoice expiry and an invoice's own.
pub const EXPIRY_SLACK: u64 = 60;

/// When `bolt11` expires: its timestamp plus its expiry (`x`, 3600 s when absent).
pub fn expires_at(bolt11: &str) -> Result<u64, String> {
    let inv: Bolt11Invoice = bolt11
        .trim()
        .parse()
        .map_err(|e| format!("not a BOLT11 invoice: {e}"))?;
    Ok((inv.duration_since_epoch() + inv.expiry_time()).as_secs())
}

/// Checks `bolt11` against the terms, the amount the action costs and the payment hash the
/// server gave for it. Returns the payee's node key.
pub fn check(
    bolt11: &str,
    terms: &Terms,
    expected_sat: u64,
    payment_hash: &str,
) -> Result<String, String> {
    let inv: Bolt11Invoice = bolt11
        .trim()
        .parse()
        .map_err(|e| format!("not a BOLT11 invoice: {e}"))?;
    inv.check_signature()
        .map_err(|_| "the invoice's signature does not verify".to_string())?;
    let network = network_of(inv.currency());
    if network != terms.network {
        return Err(format!(
            "invoice for {network}, the terms say {}",
            terms.network
        ));
    }
    let msat = inv
        .amount_milli_satoshis()
        .ok_or("the invoice has no amount")?;
    if msat != expected_sat * 1000 {
        return Err(format!(
            "invoice of {msat} msat, expected {expected_sat} sat"
        ));
    }
    let hash = hex::encode(inv.payment_hash().to_byte_array());
    if hash != payment_hash {
        return Err(format!(
            "invoice payment hash {hash}, the server said {payment_hash}"
        ));
    }
    let expiry = inv.expiry_time().as_secs();
    if expiry > terms.invoice_expiry_seconds + EXPIRY_SLACK {
        return Err(format!(
            "invoice expiry {expiry} s, the terms say {} s",
            terms.invoice_expiry_seconds
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    if inv.would_expire(now) {
        return Err("the invoice is already expired".into());
    }
    let payee = inv.recover_payee_pub_key().to_string();
    if let Some(expected) = &terms.payee {
        if !payee.eq_ignore_ascii_case(expected) {
            return Err(format!(
                "invoice payable to {payee}, the terms name {expected}"
            ));
        }
    }
    Ok(payee)
}
