//! Types of the StaticWire HTTP API (`/v1`), shared by `staticwire-control` (which serves them)
//! and `staticip` (which calls them), so the two cannot drift apart.
//!
//! Times are Unix seconds; amounts are satoshis except where a name says `msat`. Public keys are
//! WireGuard keys in base64; in URL paths the URL-safe alphabet is used (standard is accepted).

use serde::{Deserialize, Serialize};

/// `GET /v1/terms`: what the provider sells and for how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// One-time fee charged with the first month.
    pub activation_sat: u64,
    /// Rent for one month.
    pub monthly_sat: u64,
    /// `activation_sat + monthly_sat`: the amount of the first invoice.
    pub first_payment_sat: u64,
    /// Length of a month in seconds.
    pub month_seconds: u64,
    /// How long an address stays reserved for a lapsed rental.
    pub reservation_seconds: u64,
    /// How long an invoice can be paid.
    pub invoice_expiry_seconds: u64,
    /// Most months one renewal may buy.
    pub max_months: u32,
    /// Bitcoin network of the invoices: `bitcoin`, `testnet`, `signet` or `regtest`.
    pub network: String,
    /// The WireGuard servers rentals are placed on.
    pub servers: Vec<Server>,
    /// SHA-256 of the provider's HTTPS certificate (DER), 64 lowercase hex characters, for
    /// clients that pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// `host:port` customers connect to.
    pub endpoint: String,
    /// The server's WireGuard public key (base64).
    pub public_key: String,
}

/// `POST /v1/rentals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RentRequest {
    pub public_key: String,
}

/// `POST /v1/rentals/{public_key}/renewals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    pub months: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RentalState {
    /// Address held, first invoice open.
    Pending,
    /// Paid until a future time; the peer is admitted.
    Active,
    /// Paid-until passed; the address stays reserved, back payments required.
    Lapsed,
    /// Stopped by the operator; the peer is removed until resumed.
    Suspended,
    /// Over: the address went back to the pool (or the first invoice expired unpaid).
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    Open,
    Settled,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoicePurpose {
    /// Activation fee plus the first month.
    Activation,
    /// Further months, including any back payments.
    Renewal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub payment_hash: String,
    pub bolt11: String,
    pub amount_sat: u64,
    pub purpose: InvoicePurpose,
    /// Months of rent this invoice buys when paid (back payments included).
    pub months: u32,
    pub state: InvoiceState,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
}

/// `GET /v1/rentals/{public_key}` and the `rental` part of other answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rental {
    pub public_key: String,
    pub state: RentalState,
    /// The rented address, e.g. `203.0.113.10`.
    pub address: String,
    pub created_at: i64,
    /// When the first payment settled.
    pub started_at: Option<i64>,
    pub paid_until: Option<i64>,
    /// Months of back payments a renewal must include now (lapsed rentals).
    pub months_owed: u32,
    /// Satoshis due now to keep or restore service: the open invoice's amount, or the back
    /// payments plus one month for a lapsed rental, 0 for an active one.
    pub amount_due_sat: u64,
    /// End of the reservation of a lapsed rental.
    pub reserved_until: Option<i64>,
    pub open_invoice: Option<Invoice>,
    pub server: Server,
}

/// Answer of `POST /v1/rentals` and `POST .../renewals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceResponse {
    pub rental: Rental,
    pub invoice: Invoice,
}

/// `GET /v1/rentals/{public_key}/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigResponse {
    /// A wg-quick file without the private key: the client fills in `PrivateKey`.
    pub wg_quick: String,
    pub address: String,
    pub endpoint: String,
    pub server_public_key: String,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
}

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Stable error codes.
pub mod codes {
    pub const BAD_KEY: &str = "bad_public_key";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const BAD_MONTHS: &str = "bad_months";
    pub const NOT_FOUND: &str = "not_found";
    pub const CONFLICT: &str = "conflict";
    pub const TOO_LARGE: &str = "body_too_large";
    pub const UNSUPPORTED_MEDIA: &str = "unsupported_media_type";
    pub const POOL_EXHAUSTED: &str = "pool_exhausted";
    /// HTTP 503: the Lightning node could not be talked to (down, unreachable, timed out, or
    /// its TLS certificate is not the pinned one).
    pub const BACKEND_DOWN: &str = "lightning_unavailable";
    /// HTTP 502: the Lightning node answered but refused (e.g. a macaroon without the needed
    /// permission) or answered something unusable (e.g. an invoice of another network).
    pub const BACKEND_ERROR: &str = "lightning_error";
    pub const INTERNAL: &str = "internal";
    /// HTTP 429 with `Retry-After`: too many requests from this client address.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// HTTP 429: this client address already holds as many unpaid rentals as it may.
    pub const TOO_MANY_UNPAID: &str = "too_many_unpaid";
    /// HTTP 408 (the body did not arrive in time) or 503 (the request took too long).
    pub const TIMEOUT: &str = "timeout";
    /// HTTP 503: the database cannot be written (read-only, disk full); nothing was changed.
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
}
