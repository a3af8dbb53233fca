//! The dev backend: a local "node" whose key lives in the data dir. It signs real regtest BOLT11
//! invoices (any decoder accepts them) and keeps their preimages in the database, where
//! `staticwire-control dev-pay` settles them — also while the server runs, since both open the
//! same SQLite file — numbering each settlement, as LND's settle index does, so the control
//! follows them as a stream ([`DevNode::follow`]).

use super::{LnError, NewInvoice, Settlement, Status};
use crate::sql::{params, Connection, OptionalExtension};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret};
use rand::RngCore;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct DevNode {
    key: SecretKey,
    pub node_id: PublicKey,
    db: Arc<Mutex<Connection>>,
    /// Made once: a context is costly to make per invoice.
    secp: Secp256k1<bitcoin::secp256k1::All>,
    /// The control's group commit and its connection, when it has one: the node's invoice
    /// rides in the batch of the control's own (no commit of its own).
    group: std::sync::OnceLock<(Arc<crate::writer::GroupCommit>, Arc<Mutex<Connection>>)>,
}

/// Loads the node key from `path`, creating it (0600) on first use.
pub fn load_or_create_key(path: &Path) -> std::io::Result<SecretKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let bytes = hex::decode(text.trim())
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
        return SecretKey::from_slice(&bytes)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())));
    }
    let mut raw = [0u8; 32];
    loop {
        rand::thread_rng().fill_bytes(&mut raw);
        if let Ok(k) = SecretKey::from_slice(&raw) {
            write_private(path, &hex::encode(raw))?;
            return Ok(k);
        }
    }
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

fn db_err(e: crate::sql::Error) -> LnError {
    LnError::Dev(format!("dev node database: {e}"))
}

impl DevNode {
    pub fn new(key: SecretKey, db: Arc<Mutex<Connection>>) -> Self {
        let secp = Secp256k1::new();
        let node_id = PublicKey::from_secret_key(&secp, &key);
        DevNode {
            key,
            node_id,
            db,
            secp,
            group: std::sync::OnceLock::new(),
        }
    }

    /// Stages the node's invoices in the control's group commit of `db` (the connection the
    /// control's invoices are staged on).
    pub fn use_group_commit(
        &self,
        group: Arc<crate::writer::GroupCommit>,
        db: Arc<Mutex<Connection>>,
    ) {
        let _ = self.group.set((group, db));
    }

    pub fn create_invoice(
        &self,
        amount_msat: u64,
        description: &str,
        expiry: Duration,
        now: i64,
    ) -> Result<NewInvoice, LnError> {
        let mut preimage = [0u8; 32];
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut preimage);
        rand::thread_rng().fill_bytes(&mut secret);
        let hash = sha256::Hash::hash(&preimage);
        let secp = &self.secp;
        let invoice = InvoiceBuilder::new(Currency::Regtest)
            .description(description.to_string())
            .payment_hash(hash)
            .payment_secret(PaymentSecret(secret))
            .duration_since_epoch(Duration::from_secs(now.max(0) as u64))
            .min_final_cltv_expiry_delta(18)
            .amount_milli_satoshis(amount_msat)
            .expiry_time(expiry)
            .build_raw()
            .map_err(|e| LnError::Dev(format!("cannot build invoice: {e}")))?;
        // Signed without `build_signed`'s read back (a recovery and a verification of the
        // signature just made): the service checks the payee of every new invoice anyway.
        let signed = invoice
            .sign::<_, std::convert::Infallible>(|m: &Message| {
                Ok(secp.sign_ecdsa_recoverable(m, &self.key))
            })
            .unwrap_or_else(|e| match e {});
        let bolt11 = signed.to_string();
        let payment_hash = hex::encode(hash.to_byte_array());
        let expires_at = now + expiry.as_secs() as i64;
        // Sent without waiting on PostgreSQL: it goes with the control's invoice row.
        let insert = |db: &Connection| {
            db.send(
                "/* generic plan */
                 INSERT INTO dev_invoices(payment_hash, preimage, bolt11, amount_msat, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    payment_hash,
                    hex::encode(preimage),
                    bolt11,
                    amount_msat as i64,
                    expires_at
                ],
            )
        };
        match self.group.get() {
            // Durable before the control's invoice row, which is staged after it.
            Some((group, db)) => {
                let db = group
                    .lock(db)
                    .map_err(|_| LnError::Dev("database lock poisoned".into()))?;
                group.stage(&db, insert).map_err(db_err)?;
            }
            None => {
                let db = self
                    .db
                    .lock()
                    .map_err(|_| LnError::Dev("database lock poisoned".into()))?;
                insert(&db).map_err(db_err)?;
            }
        }
        Ok(NewInvoice {
            bolt11,
            payment_hash,
            expires_at,
        })
    }

    pub fn status(&self, payment_hash: &str, now: i64) -> Result<Status, LnError> {
        status_in(&*self.reads()?, payment_hash, now)
    }

    /// The connection the node's reads go to: the one its invoices are staged on
    /// (PostgreSQL: not the one whose batches hold the allocation lock).
    fn reads(&self) -> Result<std::sync::MutexGuard<'_, Connection>, LnError> {
        let db = match self.group.get() {
            Some((_, db)) => db,
            None => &self.db,
        };
        db.lock()
            .map_err(|_| LnError::Dev("database lock poisoned".into()))
    }

    /// The settlements after `index`, in order, at most `limit` (the node's settlement stream,
    /// as LND's by settle index).
    pub fn settled_after(&self, index: u64, limit: u32) -> Result<Vec<Settlement>, LnError> {
        let rows = self
            .reads()?
            .query_all(
                "SELECT payment_hash, settled_at, settle_index FROM dev_invoices
                 WHERE settle_index > ?1 ORDER BY settle_index LIMIT ?2",
                params![i64::try_from(index).unwrap_or(i64::MAX), limit],
            )
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(Settlement {
                    payment_hash: r.get(0)?,
                    settled_at: r.get(1)?,
                    index: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                })
            })
            .collect::<crate::sql::Result<Vec<_>>>()
            .map_err(db_err)
    }

    /// Follows the settlements after `index` into `tx`, asking the database every `poll`
    /// (a page at a time while there are more), until `tx` closes or a read fails.
    pub async fn follow(
        &self,
        index: &mut u64,
        tx: &tokio::sync::mpsc::Sender<Settlement>,
        poll: Duration,
    ) -> Result<(), LnError> {
        const PAGE: u32 = 256;
        while !tx.is_closed() {
            let page = self.settled_after(*index, PAGE)?;
            let full = page.len() == PAGE as usize;
            for s in page {
                *index = s.index;
                if tx.send(s).await.is_err() {
                    return Ok(());
                }
            }
            if !full {
                tokio::time::sleep(poll).await;
            }
        }
        Ok(())
    }
}

fn status_in(db: &Connection, payment_hash: &str, now: i64) -> Result<Status, LnError> {
    let row: Option<(i64, Option<i64>)> = db
        .query_row(
            "SELECT expires_at, settled_at FROM dev_invoices WHERE payment_hash = ?1",
            [payment_hash],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db_err)?;
    Ok(match row {
        None => Status::Unknown,
        Some((_, Some(at))) => Status::Settled { at },
        Some((expires, None)) if now >= expires => Status::Gone,
        Some(_) => Status::Open,
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DevPayError {
    #[error("not a BOLT11 invoice: {0}")]
    Malformed(String),
    #[error("this invoice was not issued by this server's dev node")]
    ForeignInvoice,
    #[error("invoice already paid")]
    AlreadyPaid,
    #[error("invoice expired")]
    Expired,
    #[error("{0}")]
    Db(String),
}

/// What a payer's node learns by paying: the payment hash and its preimage (the proof).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub payment_hash: String,
    pub preimage: String,
}

/// Settles an invoice of the dev node, as a payer's node would by paying it.
pub fn pay(
    db: &Connection,
    node_id: &PublicKey,
    bolt11: &str,
    now: i64,
) -> Result<Paid, DevPayError> {
    let invoice: Bolt11Invoice = bolt11
        .trim()
        .parse()
        .map_err(|e| DevPayError::Malformed(format!("{e}")))?;
    if invoice.recover_payee_pub_key() != *node_id {
        return Err(DevPayError::ForeignInvoice);
    }
    let hash = hex::encode(invoice.payment_hash().to_byte_array());
    match status_in(db, &hash, now) {
        Ok(Status::Open) => {}
        Ok(Status::Settled { .. }) => return Err(DevPayError::AlreadyPaid),
        Ok(Status::Gone) => return Err(DevPayError::Expired),
        Ok(Status::Unknown) | Err(_) => return Err(DevPayError::ForeignInvoice),
    }
    // Numbered as it is settled (the stream follows the numbers); two payers at once on
    // PostgreSQL may take the same number: the later one, refused by the index, tries again.
    let mut tries = 0;
    loop {
        let settled = db.execute(
            "UPDATE dev_invoices SET settled_at = ?1,
                    settle_index = (SELECT COALESCE(MAX(settle_index), 0) + 1 FROM dev_invoices)
             WHERE payment_hash = ?2 AND settled_at IS NULL",
            params![now, hash],
        );
        match settled {
            Ok(_) => break,
            Err(_) if tries < 5 => tries += 1,
            Err(e) => return Err(DevPayError::Db(e.to_string())),
        }
    }
    let preimage: String = db
        .query_row(
            "SELECT preimage FROM dev_invoices WHERE payment_hash = ?1",
            [&hash],
            |r| r.get(0),
        )
        .map_err(|e| DevPayError::Db(e.to_string()))?;
    Ok(Paid {
        payment_hash: hash,
        preimage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> (tempfile::TempDir, DevNode, Arc<Mutex<Connection>>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Mutex::new(
            crate::db::open_store(&dir.path().join("db")).unwrap(),
        ));
        let key = load_or_create_key(&dir.path().join("dev-node.key")).unwrap();
        (dir, DevNode::new(key, db.clone()), db)
    }

    #[test]
    fn issues_real_regtest_invoices_and_settles_them_once() {
        let (_d, node, db) = node();
        let inv = node
            .create_invoice(
                72_000_000,
                "StaticWire rental",
                Duration::from_secs(3600),
                1_800_000_000,
            )
            .unwrap();
        assert!(inv.bolt11.starts_with("lnbcrt720u1"), "{}", inv.bolt11);
        let parsed: Bolt11Invoice = inv.bolt11.parse().unwrap();
        assert_eq!(parsed.amount_milli_satoshis(), Some(72_000_000));
        assert_eq!(parsed.currency(), Currency::Regtest);
        assert!(parsed.check_signature().is_ok());
        assert_eq!(parsed.recover_payee_pub_key(), node.node_id);
        assert_eq!(
            node.status(&inv.payment_hash, 1_800_000_001).unwrap(),
            Status::Open
        );

        let c = db.lock().unwrap();
        assert!(matches!(
            pay(&c, &node.node_id, "lnbc1garbage", 1_800_000_010),
            Err(DevPayError::Malformed(_))
        ));
        let paid = pay(&c, &node.node_id, &inv.bolt11, 1_800_000_010).unwrap();
        assert_eq!(paid.payment_hash, inv.payment_hash);
        let preimage = hex::decode(&paid.preimage).unwrap();
        assert_eq!(
            hex::encode(sha256::Hash::hash(&preimage).to_byte_array()),
            inv.payment_hash
        );
        assert_eq!(
            pay(&c, &node.node_id, &inv.bolt11, 1_800_000_011),
            Err(DevPayError::AlreadyPaid)
        );
        drop(c);
        assert_eq!(
            node.status(&inv.payment_hash, 1_800_000_020).unwrap(),
            Status::Settled { at: 1_800_000_010 }
        );
    }

    /// Settlements are numbered as they happen and streamed from any position, in order.
    #[tokio::test]
    async fn settlements_stream_in_order_from_a_position() {
        let (_d, node, db) = node();
        let invoices: Vec<_> = (0..3)
            .map(|_| {
                node.create_invoice(1_000, "r", Duration::from_secs(3600), 1_800_000_000)
                    .unwrap()
            })
            .collect();
        assert!(node.settled_after(0, 10).unwrap().is_empty());
        for i in [2, 0] {
            let c = db.lock().unwrap();
            pay(
                &c,
                &node.node_id,
                &invoices[i].bolt11,
                1_800_000_010 + i as i64,
            )
            .unwrap();
        }
        let all = node.settled_after(0, 10).unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|s| (s.payment_hash.as_str(), s.index))
            .collect();
        assert_eq!(
            got,
            [
                (invoices[2].payment_hash.as_str(), 1),
                (invoices[0].payment_hash.as_str(), 2)
            ]
        );
        assert_eq!(all[0].settled_at, 1_800_000_012);
        assert_eq!(node.settled_after(1, 10).unwrap().len(), 1);
        // Followed as a stream: what is paid later arrives after what was paid before.
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let mut index = 1;
        let follow = async {
            node.follow(&mut index, &tx, Duration::from_millis(10))
                .await
        };
        let paid_later = async {
            let first = rx.recv().await.unwrap();
            {
                let c = db.lock().unwrap();
                pay(&c, &node.node_id, &invoices[1].bolt11, 1_800_000_020).unwrap();
            }
            let second = rx.recv().await.unwrap();
            drop(rx);
            (first, second)
        };
        let (followed, (first, second)) = tokio::join!(follow, paid_later);
        followed.unwrap();
        assert_eq!((first.index, second.index), (2, 3));
        assert_eq!(second.payment_hash, invoices[1].payment_hash);
    }

    #[test]
    fn expired_and_foreign_invoices_are_refused() {
        let (_d, node, db) = node();
        let inv = node
            .create_invoice(1000, "x", Duration::from_secs(60), 1_000)
            .unwrap();
        let c = db.lock().unwrap();
        assert_eq!(
            pay(&c, &node.node_id, &inv.bolt11, 1_060),
            Err(DevPayError::Expired)
        );
        let other = PublicKey::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[7; 32]).unwrap(),
        );
        assert_eq!(
            pay(&c, &other, &inv.bolt11, 1_001),
            Err(DevPayError::ForeignInvoice)
        );
        drop(c);
        assert_eq!(node.status(&inv.payment_hash, 1_060).unwrap(), Status::Gone);
    }
}
