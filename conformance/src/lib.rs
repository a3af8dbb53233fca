//! The StaticWire conformance suite: drives a server through the rental protocol of
//! PROTOCOL.md and reports each rule as pass, fail, warning (a SHOULD) or skipped.

pub mod http;
pub mod invoice;
pub mod replay;
pub mod report;
pub mod suite;

pub use report::{Outcome, Report};
pub use suite::{run, Options};
