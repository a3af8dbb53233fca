//! The control's own record of the PTRs its customers asked for (table `ptr_records`, one row
//! per address): the durable half of the reverse DNS, from which every full compare rebuilds
//! the zones. A row names its rental; it counts only while that rental is active (a lapse
//! brings the provider's default back, a renewal the customer's name), and goes once the
//! rental is released.

use crate::sql::{params, Connection};

/// One address's wanted name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtrRow {
    pub address: String,
    pub rental_id: i64,
    /// Absolute, lowercase A-labels.
    pub name: String,
    /// The DNS server took it (set when an update or a compare confirmed it).
    pub published: bool,
}

fn row(r: &crate::sql::Row) -> crate::sql::Result<PtrRow> {
    Ok(PtrRow {
        address: r.get(0)?,
        rental_id: r.get(1)?,
        name: r.get(2)?,
        published: r.get::<_, i64>(3)? != 0,
    })
}

const COLS: &str = "address, rental_id, name, published";

/// Records (or replaces) the name wanted for `address`, not yet published.
pub fn upsert(
    db: &Connection,
    address: &str,
    rental_id: i64,
    name: &str,
    now: i64,
) -> crate::sql::Result<()> {
    db.execute(
        "INSERT INTO ptr_records(address, rental_id, name, set_at, published) VALUES (?1, ?2, ?3, ?4, 0)
         ON CONFLICT(address) DO UPDATE SET rental_id = excluded.rental_id, name = excluded.name,
             set_at = excluded.set_at, published = 0",
        params![address, rental_id, name, now],
    )?;
    Ok(())
}

/// Forgets the rental's name for `address` (every address when None); how many went.
pub fn remove(db: &Connection, rental_id: i64, address: Option<&str>) -> crate::sql::Result<usize> {
    match address {
        Some(a) => db.execute(
            "DELETE FROM ptr_records WHERE rental_id = ?1 AND address = ?2",
            params![rental_id, a],
        ),
        None => db.execute(
            "DELETE FROM ptr_records WHERE rental_id = ?1",
            params![rental_id],
        ),
    }
}

pub fn of_rental(db: &Connection, rental_id: i64) -> crate::sql::Result<Vec<PtrRow>> {
    let mut stmt = db.prepare(&format!(
        "SELECT {COLS} FROM ptr_records WHERE rental_id = ?1 ORDER BY address"
    ))?;
    stmt.query_map(params![rental_id], row)?.collect()
}

/// Every row, after dropping those of released rentals.
pub fn all_live(db: &Connection) -> crate::sql::Result<Vec<PtrRow>> {
    db.execute(
        "DELETE FROM ptr_records WHERE rental_id IN
             (SELECT id FROM rentals WHERE released_at IS NOT NULL)",
        [],
    )?;
    let mut stmt = db.prepare(&format!("SELECT {COLS} FROM ptr_records ORDER BY address"))?;
    stmt.query_map([], row)?.collect()
}

pub fn set_published(db: &Connection, address: &str, published: bool) -> crate::sql::Result<()> {
    db.execute(
        "UPDATE ptr_records SET published = ?2 WHERE address = ?1",
        params![address, published as i64],
    )?;
    Ok(())
}
