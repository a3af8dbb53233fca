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
    /// `months` asked for, plus `owed` months of back payments the rental showed before, when
    /// it was paid until `paid_until`: one more month is owed if the invoice was made at or
    /// after the next month boundary, `paid_until + owed × month_seconds` (PROTOCOL.md section
    /// 8, check 3).
    Renew {
        months: u32,
        owed: u32,
        paid_until: Option<i64>,
    },
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
        Action::Renew {
            months,
            owed,
            paid_until,
        } => {
            let boundary = paid_until.map(|p| {
                p.saturating_add(i64::from(owed).saturating_mul(terms.month_seconds as i64))
            });
            let passed = boundary.is_some_and(|b| server_view.created_at >= b);
            let total = if passed && server_view.months == months + owed + 1 {
                months + owed + 1
            } else {
                months + owed
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::sha256;
    use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
    use staticwire_api::{InvoicePurpose, InvoiceState};

    fn terms() -> Terms {
        Terms {
            activation_sat: 48_000,
            monthly_sat: 24_000,
            first_payment_sat: 72_000,
            month_seconds: 2_592_000,
            reservation_seconds: 5_184_000,
            invoice_expiry_seconds: 3600,
            max_months: 12,
            network: "regtest".into(),
            servers: vec![],
            tls_fingerprint: None,
            payee: None,
            ipv4_prefix_lengths: vec![32],
            address_monthly_sat: 0,
            ipv6_monthly_sat: 0,
            ipv6_only_monthly_sat: None,
            proof_key: None,
            reverse_dns: false,
        }
    }

    /// A renewal invoice of `months` months made at `created_at`, as a server answers it.
    fn renewal(months: u32, created_at: i64) -> (String, Invoice) {
        let sat = 24_000 * u64::from(months);
        let hash = sha256::Hash::hash(&created_at.to_be_bytes());
        let key = SecretKey::from_slice(&[5; 32]).unwrap();
        let secp = Secp256k1::new();
        let bolt11 = lightning_invoice::InvoiceBuilder::new(Currency::Regtest)
            .description("StaticWire".into())
            .payment_hash(hash)
            .payment_secret(lightning_invoice::PaymentSecret([1; 32]))
            .duration_since_epoch(Duration::from_secs(created_at as u64))
            .min_final_cltv_expiry_delta(18)
            .amount_milli_satoshis(sat * 1000)
            .expiry_time(Duration::from_secs(3600))
            .build_signed(|m: &Message| secp.sign_ecdsa_recoverable(m, &key))
            .unwrap()
            .to_string();
        let view = Invoice {
            payment_hash: hex::encode(hash.to_byte_array()),
            bolt11: bolt11.clone(),
            amount_sat: sat,
            purpose: InvoicePurpose::Renewal,
            months,
            state: InvoiceState::Open,
            created_at,
            expires_at: created_at + 3600,
            settled_at: None,
        };
        (bolt11, view)
    }

    /// PROTOCOL.md section 8, check 3: a month boundary passing between the status read and
    /// the renewal adds one owed month, and only then; nothing else is accepted.
    #[test]
    fn a_month_boundary_during_a_renewal_adds_exactly_one_owed_month() {
        let t = terms();
        let paid_until = 1_800_000_000;
        let month = t.month_seconds as i64;
        let check_at = |owed, months, created_at: i64| {
            let (b, v) = renewal(months, created_at);
            let action = Action::Renew {
                months: 1,
                owed,
                paid_until: Some(paid_until),
            };
            check(&b, &v, &t, action, created_at as u64 + 10)
        };
        // Active when read (owed 0): the boundary is paid_until itself.
        assert!(check_at(0, 1, paid_until - 5).is_ok());
        assert!(check_at(0, 2, paid_until).is_ok());
        assert_eq!(
            check_at(0, 2, paid_until - 1),
            Err(InvoiceError::WrongMonths {
                expected: 1,
                got: 2
            })
        );
        assert!(
            check_at(0, 3, paid_until + month).is_err(),
            "two boundaries"
        );
        // Lapsed when read with one month owed: the next boundary is a month later.
        assert!(check_at(1, 2, paid_until + month - 1).is_ok());
        assert!(check_at(1, 3, paid_until + month).is_ok());
        assert!(check_at(1, 3, paid_until + month - 1).is_err());
        // Without a paid_until (never started) no boundary is assumed.
        let (b, v) = renewal(2, paid_until);
        let action = Action::Renew {
            months: 1,
            owed: 0,
            paid_until: None,
        };
        assert!(check(&b, &v, &t, action, paid_until as u64).is_err());
    }
}
