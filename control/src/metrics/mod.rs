//! Prometheus `/metrics` of the control (`[metrics] listen`, off by default; keep it on
//! loopback): what the business and its dependencies are doing.
//!
//! Two kinds of series. Events (HTTP requests, Lightning calls, reconciliations, admissions)
//! are recorded where they happen through [`events`], which does nothing until
//! [`scrape::install`] sets the recorder; it is a leaf, so the Lightning backends and the
//! service record without knowing the rest. State (rentals by state, addresses per pool,
//! invoices, satoshis received, the data dir's disk) is read from the database at each
//! scrape ([`scrape`], a face over the service), so the totals survive restarts and can never
//! disagree with the ledger.

pub mod events;
pub mod scrape;
