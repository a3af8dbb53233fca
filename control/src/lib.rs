//! staticwire-control as a library: the rental server's parts, which the `staticwire-control`
//! binary (main.rs) wires together, and which tests and fuzz targets drive directly.
//!
//! Layers (imports only point down; see ARCHITECTURE.md):
//! - leaves: `config`, `network`, `metrics::events`, `sql`, `clock`, `limits`, `ledger`,
//!   `datadir`;
//! - stores and adapters: `db`, `store`, `alloc`, `freespace`, `unpaid` (the index of unpaid
//!   holds), `holds` (the bounds on unpaid holds), `writer`,
//!   `lightning`, `feed`, `deadlines` and `lease` (queries), `prefixes`, `backup`, `migrate`,
//!   `secrets`, `rdns` (reverse DNS on the provider's DNS server);
//! - `service`: rentals, invoices, reconciliation, views;
//! - the loop (`run`) and the faces (`http`, `compat`, `web`, `https`, `metrics` scrape);
//! - start-up (`app`: build, agree with the node, serve), which wires them together;
//! - the binary (main.rs): the command line, messages and exit status.

pub mod alloc;
pub mod app;
pub mod backup;
pub mod clock;
pub mod compat;
pub mod config;
pub mod datadir;
pub mod db;
pub mod deadlines;
pub mod feed;
pub mod freespace;
pub mod holds;
pub mod http;
pub mod https;
pub mod lease;
pub mod ledger;
pub mod lightning;
pub mod limits;
pub mod metrics;
pub mod migrate;
pub mod network;
pub mod prefixes;
pub mod rdns;
pub mod run;
pub mod secrets;
pub mod service;
pub mod sql;
pub mod store;
pub mod unpaid;
pub mod web;
pub mod writer;

#[cfg(any(test, feature = "testkit"))]
pub mod proving;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

#[cfg(test)]
mod abuse_tests;
#[cfg(test)]
mod api_tests;
#[cfg(test)]
mod compat_tests;
#[cfg(test)]
mod deadline_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod feed_tests;
#[cfg(test)]
mod group_commit_tests;
#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod holds_tests;
#[cfg(test)]
mod openapi_tests;
#[cfg(test)]
mod prefix_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod replica_race_tests;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod space_tests;
#[cfg(test)]
mod uapi_fake;
