//! Lightning backends behind one interface: create an invoice, ask about it.
//!
//! `dev` signs real BOLT11 invoices with a local node key and is settled by
//! `staticwire-control dev-pay`; `lnd` and `cln` talk to real nodes.

pub mod cln;
pub mod dev;
pub mod lnd;

use crate::metrics::events;
use crate::network::normalize_network;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, VerifyOnly};
use lightning_invoice::SignedRawBolt11Invoice;
use std::time::{Duration, Instant};

/// Two families, which the API keeps apart: the node could not be talked to (`Unreachable`,
/// `Certificate`: HTTP 503 `lightning_unavailable`), or it answered and said no or something
/// malformed (`Refused`, `Permission`, `NotFound`, `Protocol`: HTTP 502 `lightning_error`).
#[derive(Debug, thiserror::Error)]
pub enum LnError {
    #[error("lightning backend unreachable: {0}")]
    Unreachable(String),
    #[error("lightning node's TLS certificate does not match the pinned tls_cert: {0}")]
    Certificate(String),
    #[error("lightning backend refused: {0}")]
    Refused(String),
    #[error("lightning backend refused for lack of permission: {0}")]
    Permission(String),
    #[error("lightning backend does not know it: {0}")]
    NotFound(String),
    #[error("lightning backend answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Dev(String),
}

impl LnError {
    /// Whether the node could not be talked to at all (as opposed to answering "no").
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            LnError::Unreachable(_) | LnError::Certificate(_) | LnError::Dev(_)
        )
    }

    /// The failure's kind in the metrics.
    pub fn metric_kind(&self) -> &'static str {
        if self.is_unavailable() {
            events::UNAVAILABLE
        } else {
            events::REFUSED
        }
    }
}

/// A call's outcome as the metrics record it.
fn outcome<T>(r: &Result<T, LnError>) -> Result<(), &'static str> {
    r.as_ref().map(|_| ()).map_err(LnError::metric_kind)
}

/// A settlement the node pushed, with its position in the node's settlement order (LND's
/// `settle_index`, CLN's `pay_index`) so a stream can resume after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub payment_hash: String,
    pub settled_at: i64,
    pub index: u64,
}

/// One verification context for every invoice check: `lightning_invoice`'s own parse builds
/// (and randomises) a fresh context for each of its signature steps, which cost more
/// than the check itself when the control makes a thousand invoices a second.
static VERIFY: std::sync::LazyLock<Secp256k1<VerifyOnly>> =
    std::sync::LazyLock::new(Secp256k1::verification_only);

/// An invoice as the control checks the ones its node makes: its signature (one recovery, on
/// [`VERIFY`], and a low-S check) and the fields a payer needs (BOLT 11: a payment hash, a
/// payment secret, a description or its hash).
pub struct CheckedInvoice {
    pub payee: PublicKey,
    pub currency: lightning_invoice::Currency,
}

impl CheckedInvoice {
    pub fn parse(bolt11: &str) -> Option<Self> {
        let signed: SignedRawBolt11Invoice = bolt11.trim().parse().ok()?;
        let raw = signed.raw_invoice();
        let described = raw.description().is_some() || raw.description_hash().is_some();
        if raw.payment_hash().is_none() || raw.payment_secret().is_none() || !described {
            return None;
        }
        let msg = Message::from_digest(*signed.signable_hash());
        let sig = &signed.signature().0;
        let payee = VERIFY.recover_ecdsa(&msg, sig).ok()?;
        // A payee the invoice names must be the signer. The recovered key is one the
        // signature verifies under; what verifying adds is the refusal of a high-S signature
        // (BOLT 11 readers refuse those), checked here without a second curve operation.
        if raw.payee_pub_key().is_some_and(|named| named.0 != payee) {
            return None;
        }
        let standard = sig.to_standard();
        let mut low = standard;
        low.normalize_s();
        if low != standard {
            return None;
        }
        Some(CheckedInvoice {
            payee,
            currency: raw.currency(),
        })
    }
}

/// The node an invoice is payable to (recovered from its signature), in hex.
pub fn invoice_payee(bolt11: &str) -> Option<String> {
    CheckedInvoice::parse(bolt11).map(|i| i.payee.to_string())
}

/// The payee (hex) and network of an invoice from one check of its signature, the costliest
/// step of making an invoice.
pub fn invoice_payee_network(bolt11: &str) -> Option<(String, &'static str)> {
    let inv = CheckedInvoice::parse(bolt11)?;
    Some((
        inv.payee.to_string(),
        crate::network::currency_name(inv.currency),
    ))
}

/// A node public key as a node reports it: 33 bytes in hex, a point on the curve; else None.
pub fn node_key(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let key: bitcoin::secp256k1::PublicKey = s.parse().ok()?;
    Some(key.to_string())
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
    /// The node has no such invoice (it was replaced or restored, or is another node).
    Unknown,
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
        let started = Instant::now();
        let r = match self {
            Backend::Dev(d) => d.create_invoice(amount_msat, description, expiry, now),
            Backend::Lnd(l) => l.create_invoice(amount_msat, description, expiry).await,
            Backend::Cln(c) => c.create_invoice(amount_msat, description, expiry).await,
        };
        events::lightning_call(self.kind(), "create_invoice", started, outcome(&r));
        r
    }

    pub async fn status(&self, payment_hash: &str, now: i64) -> Result<Status, LnError> {
        let started = Instant::now();
        let r = match self {
            Backend::Dev(d) => d.status(payment_hash, now),
            Backend::Lnd(l) => l.status(payment_hash).await,
            Backend::Cln(c) => c.status(payment_hash).await,
        };
        events::lightning_call(self.kind(), "invoice_status", started, outcome(&r));
        r
    }

    /// The backend's name in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Dev(_) => "dev",
            Backend::Lnd(_) => "lnd",
            Backend::Cln(_) => "cln",
        }
    }

    /// Streams settlements into `tx` (LND's invoice subscription, CLN's `waitanyinvoice`, the
    /// dev node's settle index, asked every `poll`), starting after settlement index `from`
    /// and reconnecting with backoff from the last index seen, for as long as `tx` is open.
    /// `live` says whether the stream is up (not since its last failure): the invoice checks
    /// are then only its safety net.
    pub async fn stream_settlements(
        &self,
        from: u64,
        tx: tokio::sync::mpsc::Sender<Settlement>,
        poll: Duration,
        live: &std::sync::atomic::AtomicBool,
    ) {
        use std::sync::atomic::Ordering;
        let mut index = from;
        let mut backoff = Duration::from_secs(1);
        let up = |is: bool| {
            live.store(is, Ordering::Relaxed);
            events::settlement_stream(self.kind(), is);
        };
        while !tx.is_closed() {
            up(true);
            let result = match self {
                Backend::Dev(d) => d.follow(&mut index, &tx, poll).await,
                Backend::Lnd(l) => l.subscribe(&mut index, &tx).await,
                Backend::Cln(c) => c.wait_any(&mut index, &tx).await,
            };
            if let Err(e) = result {
                up(false);
                events::lightning_error(self.kind(), "settlement_stream", e.metric_kind());
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
        up(false);
    }

    /// Meta key under which the position of this backend's settlement stream is kept.
    pub fn stream_index_key(&self) -> Option<&'static str> {
        match self {
            Backend::Dev(_) => Some("dev_settle_index"),
            Backend::Lnd(_) => Some("lnd_settle_index"),
            Backend::Cln(_) => Some("cln_pay_index"),
        }
    }

    /// For `/readyz`: can the node do what renting needs (create invoices, look them up)?
    /// A missing permission is named.
    pub async fn ready(&self) -> Result<(), LnError> {
        let started = Instant::now();
        let r = match self {
            Backend::Dev(_) => Ok(()),
            Backend::Lnd(l) => l.ready().await,
            Backend::Cln(c) => c.ping().await,
        };
        events::lightning_call(self.kind(), "ready", started, outcome(&r));
        r
    }

    /// The node's network in the terms' spelling; `None` when the node will not say (an LND
    /// macaroon without `info:read` and no invoice yet to read it from).
    /// The node's public key, which signs its invoices (the terms' `payee`), when the node
    /// says (LND: `getinfo` needs `info:read`).
    pub async fn node_id(&self) -> Option<String> {
        match self {
            Backend::Dev(node) => Some(node.node_id.to_string()),
            Backend::Lnd(l) => l.node_id().await,
            Backend::Cln(c) => c.node_id().await,
        }
    }

    pub async fn network(&self) -> Result<Option<&'static str>, LnError> {
        match self {
            Backend::Dev(_) => Ok(Some("regtest")),
            Backend::Lnd(l) => l.network().await,
            Backend::Cln(c) => c.network().await.map(Some),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkError {
    #[error("lightning.network is {configured} but the node is on {node}; fix the config or point it at the right node")]
    Mismatch {
        configured: String,
        node: &'static str,
    },
    #[error("lightning.network {0:?} is not one of bitcoin, testnet, signet, regtest")]
    Invalid(String),
    #[error("cannot learn the node's network ({0}); set lightning.network")]
    Unknown(String),
}

/// The network to publish: the configured one if the node agrees (or cannot say), else the
/// node's when none is configured.
pub fn resolve_network(
    configured: Option<&str>,
    node: Result<Option<&'static str>, LnError>,
) -> Result<&'static str, NetworkError> {
    let configured = match configured {
        Some(c) => Some(normalize_network(c).ok_or_else(|| NetworkError::Invalid(c.into()))?),
        None => None,
    };
    match (configured, node) {
        (Some(c), Ok(Some(n))) if c != n => Err(NetworkError::Mismatch {
            configured: c.into(),
            node: n,
        }),
        (Some(c), Ok(_)) => Ok(c),
        (Some(c), Err(e)) => {
            // Invoices are checked against it as they are made, so a wrong one cannot rent.
            tracing::warn!("cannot ask the node for its network ({e}); trusting the config's {c}");
            Ok(c)
        }
        (None, Ok(Some(n))) => Ok(n),
        (None, Ok(None)) => Err(NetworkError::Unknown(
            "its macaroon lacks info:read and it has no invoice to read it from".into(),
        )),
        (None, Err(e)) => Err(NetworkError::Unknown(e.to_string())),
    }
}

#[cfg(test)]
mod standin_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_from_config_and_node() {
        assert_eq!(resolve_network(None, Ok(Some("regtest"))), Ok("regtest"));
        assert_eq!(
            resolve_network(Some("mainnet"), Ok(Some("bitcoin"))),
            Ok("bitcoin")
        );
        assert_eq!(
            resolve_network(Some("bitcoin"), Ok(Some("regtest"))),
            Err(NetworkError::Mismatch {
                configured: "bitcoin".into(),
                node: "regtest"
            })
        );
        assert_eq!(resolve_network(Some("signet"), Ok(None)), Ok("signet"));
        assert_eq!(
            resolve_network(Some("signet"), Err(LnError::Unreachable("x".into()))),
            Ok("signet")
        );
        assert!(matches!(
            resolve_network(None, Ok(None)),
            Err(NetworkError::Unknown(_))
        ));
        assert!(matches!(
            resolve_network(None, Err(LnError::Unreachable("x".into()))),
            Err(NetworkError::Unknown(_))
        ));
        assert!(matches!(
            resolve_network(Some("litecoin"), Ok(Some("bitcoin"))),
            Err(NetworkError::Invalid(_))
        ));
        assert_eq!(normalize_network("testnet4"), Some("testnet"));
    }

    /// An invoice naming `named` as its payee if given, signed by `sign` (handed the
    /// invoice's message).
    fn invoice(
        named: Option<PublicKey>,
        sign: impl FnOnce(&Message) -> bitcoin::secp256k1::ecdsa::RecoverableSignature,
    ) -> String {
        use bitcoin::hashes::{sha256, Hash};
        use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
        let b = InvoiceBuilder::new(Currency::Regtest)
            .description("check".into())
            .payment_hash(sha256::Hash::hash(b"preimage"))
            .payment_secret(PaymentSecret([7; 32]))
            .duration_since_epoch(Duration::from_secs(1_700_000_000))
            .min_final_cltv_expiry_delta(18)
            .amount_milli_satoshis(72_000_000);
        let b = match named {
            Some(pk) => b.payee_pub_key(pk),
            None => b,
        };
        let raw = b.build_raw().unwrap();
        raw.sign::<_, std::convert::Infallible>(|m| Ok(sign(m)))
            .unwrap()
            .to_string()
    }

    /// An invoice signed by `key`, naming `named` as its payee if given.
    fn signed(key: &bitcoin::secp256k1::SecretKey, named: Option<PublicKey>) -> String {
        invoice(named, |m| Secp256k1::new().sign_ecdsa_recoverable(m, key))
    }

    #[test]
    fn the_shared_context_check_agrees_with_the_full_parse() {
        let key = bitcoin::secp256k1::SecretKey::from_slice(&[0x11; 32]).unwrap();
        let node = PublicKey::from_secret_key(&Secp256k1::new(), &key);
        let bolt11 = signed(&key, None);
        let full: lightning_invoice::Bolt11Invoice = bolt11.parse().unwrap();
        let checked = CheckedInvoice::parse(&bolt11).unwrap();
        assert_eq!(checked.payee, node);
        assert_eq!(checked.payee, full.recover_payee_pub_key());
        assert_eq!(checked.currency, full.currency());
        assert_eq!(
            invoice_payee_network(&format!(" {bolt11}\n")),
            Some((node.to_string(), "regtest"))
        );
        // Naming its own signer is fine.
        assert_eq!(
            CheckedInvoice::parse(&signed(&key, Some(node)))
                .unwrap()
                .payee,
            node
        );
    }

    #[test]
    fn a_high_s_signature_does_not_check() {
        use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
        let key = bitcoin::secp256k1::SecretKey::from_slice(&[0x11; 32]).unwrap();
        let sign = |high: bool| {
            invoice(None, |m| {
                let sig = Secp256k1::new().sign_ecdsa_recoverable(m, &key);
                if !high {
                    return sig;
                }
                // The same signature with s replaced by n - s (and the other recovery id):
                // it recovers the same key, and verification refuses it.
                const N: [u8; 32] = [
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                    0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2,
                    0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
                ];
                let (id, mut bytes) = sig.serialize_compact();
                let mut borrow = 0i16;
                for i in (0..32).rev() {
                    let d = i16::from(N[i]) - i16::from(bytes[32 + i]) - borrow;
                    bytes[32 + i] = d.rem_euclid(256) as u8;
                    borrow = i16::from(d < 0);
                }
                let id = RecoveryId::from_i32(id.to_i32() ^ 1).unwrap();
                RecoverableSignature::from_compact(&bytes, id).unwrap()
            })
        };
        let node = PublicKey::from_secret_key(&Secp256k1::new(), &key);
        assert_eq!(CheckedInvoice::parse(&sign(false)).unwrap().payee, node);
        let high = sign(true);
        let raw: lightning_invoice::SignedRawBolt11Invoice = high.parse().unwrap();
        assert_eq!(
            raw.recover_payee_pub_key().unwrap().0,
            node,
            "it recovers the signer"
        );
        assert!(CheckedInvoice::parse(&high).is_none());
    }

    #[test]
    fn a_forged_or_misnamed_invoice_does_not_check() {
        let key = bitcoin::secp256k1::SecretKey::from_slice(&[0x11; 32]).unwrap();
        let other = bitcoin::secp256k1::SecretKey::from_slice(&[0x22; 32]).unwrap();
        let node = PublicKey::from_secret_key(&Secp256k1::new(), &key);
        let other_pk = PublicKey::from_secret_key(&Secp256k1::new(), &other);
        // Naming a payee that did not sign it.
        assert!(CheckedInvoice::parse(&signed(&key, Some(other_pk))).is_none());
        // Signed over another message: well formed, but never recovers to the signer.
        let forged = invoice(None, |_| {
            let m = Message::from_digest([9; 32]);
            Secp256k1::new().sign_ecdsa_recoverable(&m, &key)
        });
        assert!(CheckedInvoice::parse(&forged).is_none_or(|c| c.payee != node));
        // The library agrees that it is not the node's.
        let full: lightning_invoice::Bolt11Invoice = forged.parse().unwrap();
        assert_ne!(full.recover_payee_pub_key(), node);
        assert!(CheckedInvoice::parse("lnbcrt1").is_none());
        assert!(CheckedInvoice::parse("").is_none());
    }
}
