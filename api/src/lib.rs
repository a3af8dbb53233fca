//! Types of the StaticWire HTTP API (`/v1`), shared by `staticwire-control` (which serves them)
//! and `staticip` (which calls them), so the two cannot drift apart.
//!
//! Times are Unix seconds; amounts are satoshis except where a name says `msat`. Public keys are
//! WireGuard keys in base64; in URL paths the URL-safe alphabet is used (standard is accepted).

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
pub mod openapi;
pub mod proof;

/// `GET /v1/terms`: what the provider sells and for how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Public key (33 bytes, 66 lowercase hex characters) of the Lightning node that signs the
    /// invoices, when the provider publishes it: clients then refuse an invoice of another payee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<String>,
    /// IPv4 prefix lengths a rental may ask for (`32` is a single address; `31`, `30`, `29`
    /// are blocks of 2, 4, 8). Servers that predate prefixes rent /32 only.
    #[serde(default = "only_32")]
    pub ipv4_prefix_lengths: Vec<u8>,
    /// Rent per month of every address of a prefix beyond its first (a /30 costs
    /// `monthly_sat + 3 * address_monthly_sat`).
    #[serde(default)]
    pub address_monthly_sat: u64,
    /// Extra rent per month for the IPv6 prefix; 0 means IPv6 comes with every rental at no
    /// extra cost where the server has an IPv6 pool.
    #[serde(default)]
    pub ipv6_monthly_sat: u64,
    /// Rent per month of an IPv6-only rental (`"ipv4": false`); absent when the provider does
    /// not sell them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_only_monthly_sat: Option<u64>,
    /// The server's X25519 proof key (standard base64, 44 characters): clients prove they hold
    /// a rental's private key by a Diffie-Hellman with it (PROTOCOL.md 3.1, v1.1). Pinned by
    /// clients like `tls_fingerprint`; absent on v1.0 servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_key: Option<String>,
    /// The server serves the reverse-DNS routes (`/v1/rentals/{key}/ptr`, PROTOCOL.md,
    /// Reverse DNS); absent (false) when it does not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverse_dns: bool,
}

fn only_32() -> Vec<u8> {
    vec![32]
}

fn is_32(l: &u8) -> bool {
    *l == 32
}

fn thirty_two() -> u8 {
    32
}

impl Terms {
    /// Rent per month of a rental with an IPv4 prefix of `prefix_len` and, if `ipv6`, an
    /// IPv6 prefix. Both sides compute invoice amounts with this.
    pub fn monthly_for(&self, prefix_len: u8, ipv6: bool) -> u64 {
        monthly_rent(
            self.monthly_sat,
            self.address_monthly_sat,
            self.ipv6_monthly_sat,
            prefix_len,
            ipv6,
        )
    }
}

/// `monthly_sat` for the first address, `address_monthly_sat` for every further address of an
/// IPv4 prefix of `prefix_len`, and `ipv6_monthly_sat` if the rental has an IPv6 prefix.
pub fn monthly_rent(
    monthly_sat: u64,
    address_monthly_sat: u64,
    ipv6_monthly_sat: u64,
    prefix_len: u8,
    ipv6: bool,
) -> u64 {
    let extra = match prefix_len {
        len @ 0..=32 => (1u64 << (32 - u32::from(len))) - 1,
        _ => 0,
    };
    let v6 = if ipv6 { ipv6_monthly_sat } else { 0 };
    monthly_sat
        .saturating_add(extra.saturating_mul(address_monthly_sat))
        .saturating_add(v6)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Server {
    /// `host:port` customers connect to.
    pub endpoint: String,
    /// The server's WireGuard public key (base64).
    pub public_key: String,
    /// The host's name (the `router` a rental is placed on).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Single IPv4 addresses still free on this host (in `/v1/terms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_ipv4: Option<u64>,
    /// Length of the IPv6 prefix every rental on this host gets (64 or 56); absent when the
    /// host has no IPv6 pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix_len: Option<u8>,
}

/// `POST /v1/rentals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RentRequest {
    /// The customer's WireGuard public key: standard base64 (`+`, `/`), 44 characters; the
    /// URL-safe alphabet is for paths only and is refused here.
    pub public_key: String,
    /// IPv4 prefix length (32, or one of the terms' `ipv4_prefix_lengths`); default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    /// Whether to get an IPv6 prefix too. Default: yes where it costs nothing extra.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// The host to rent on (a server's `name`); default: the first with free capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `false` rents an IPv6 prefix alone (where the terms' `ipv6_only_monthly_sat` says the
    /// provider sells that); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<bool>,
}

impl RentRequest {
    /// A plain /32 rental (with IPv6 where it is free).
    pub fn new(public_key: &str) -> Self {
        RentRequest {
            public_key: public_key.to_string(),
            prefix_len: None,
            ipv6: None,
            host: None,
            ipv4: None,
        }
    }
}

/// `POST /v1/rentals/{public_key}/renewals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewRequest {
    pub months: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    Open,
    Settled,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvoicePurpose {
    /// Activation fee plus the first month.
    Activation,
    /// Further months, including any back payments.
    Renewal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rental {
    pub public_key: String,
    pub state: RentalState,
    /// The rented address, e.g. `203.0.113.10` (the first of a prefix); empty for an
    /// IPv6-only rental.
    pub address: String,
    /// Length of the rented IPv4 prefix: 32 for one address, 29 for a block of 8.
    #[serde(default = "thirty_two", skip_serializing_if = "is_32")]
    pub prefix_len: u8,
    /// The routed IPv6 prefix, e.g. `2001:db8:0:5::/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceResponse {
    pub rental: Rental,
    pub invoice: Invoice,
}

/// `GET /v1/rentals/{public_key}/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigResponse {
    /// A wg-quick file without the private key: the client fills in `PrivateKey`.
    pub wg_quick: String,
    pub address: String,
    /// Every network routed to the customer: the IPv4 prefix and the IPv6 prefix, in CIDR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    pub endpoint: String,
    pub server_public_key: String,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
}

/// `PUT /v1/rentals/{public_key}/ptr`: the PTR record of one of the rental's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtrRequest {
    /// One of the rental's addresses; absent: its (first) IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A host name (Unicode names are sent as their IDNA A-labels), which must resolve to
    /// `address` (A or AAAA).
    pub name: String,
}

/// `DELETE /v1/rentals/{public_key}/ptr`: back to the provider's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtrClearRequest {
    /// One of the rental's addresses; absent: every address of the rental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The reverse DNS of one address of a rental.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtrRecord {
    pub address: String,
    /// The PTR's target as served (absolute, with the final dot), or null for none.
    pub name: Option<String>,
    /// True when the customer set it; false for the provider's default.
    pub custom: bool,
    /// The DNS server took the last change; false while it is retried (the server keeps
    /// what it wants and repairs the zone until it matches).
    pub published: bool,
}

/// `GET /v1/rentals/{public_key}/ptr` (and the answer of a change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PtrList {
    /// Every IPv4 address of the rental, and each IPv6 address that has a custom record.
    pub records: Vec<PtrRecord>,
    /// The base URL of the server's tunnel listener (inside the tunnel; PROTOCOL.md, Reverse DNS), if
    /// it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_api: Option<String>,
    /// How many IPv6 addresses may have a custom record.
    pub max_ipv6_names: u32,
}

/// Every error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `POST /v1/dev/pay` (test hook): pay an invoice of the server's test Lightning node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevPayRequest {
    pub bolt11: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevPayResponse {
    pub paid: bool,
    pub payment_hash: String,
    /// The proof of payment: SHA-256 of it is the payment hash.
    pub preimage: String,
}

/// `POST /v1/dev/clock` (test hook): move the server's clock forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevClockRequest {
    /// Seconds to add, 0 to ten years.
    pub seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DevClockResponse {
    /// The server's time now (Unix seconds).
    pub now: i64,
    /// How far its clock is ahead of the real one.
    pub offset: i64,
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
    /// HTTP 405: the route exists, not with this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// HTTP 401: the request acts on or reveals a key's rental and carries no proof of key
    /// possession (`Authorization: StaticWire-Proof`).
    pub const PROOF_REQUIRED: &str = "proof_required";
    /// HTTP 401: the proof is malformed, its key unusable, or its MAC does not verify.
    pub const PROOF_INVALID: &str = "proof_invalid";
    /// HTTP 401: the proof's time is more than 120 s from the server's clock.
    pub const PROOF_EXPIRED: &str = "proof_expired";
    /// HTTP 401: this exact proof was already accepted.
    pub const PROOF_REPLAYED: &str = "proof_replayed";
    /// HTTP 401: the proof is for another key than the one the request names.
    pub const PROOF_KEY_MISMATCH: &str = "proof_key_mismatch";
    /// HTTP 400: a PTR name that is not a usable host name (length, labels, IDNA).
    pub const BAD_NAME: &str = "bad_name";
    /// HTTP 400: the address is not one of the rental's (its IPv4 prefix, or an IPv6 address
    /// inside its IPv6 prefix), or the server has no reverse zone for it.
    pub const ADDRESS_NOT_RENTED: &str = "address_not_rented";
    /// HTTP 403: on a tunnel listener, the request came from another rental's tunnel and
    /// carries no valid proof of the key it names.
    pub const TUNNEL_FORBIDDEN: &str = "tunnel_forbidden";
    /// HTTP 409: reverse DNS is only set for an active (paid) rental.
    pub const RENTAL_NOT_ACTIVE: &str = "rental_not_active";
    /// HTTP 409: the rental already has as many IPv6 PTR records as the server allows.
    pub const PTR_LIMIT: &str = "ptr_limit";
    /// HTTP 422: the name does not resolve (A/AAAA) to the address (forward confirmation).
    pub const FORWARD_MISMATCH: &str = "forward_mismatch";
    /// HTTP 503: the provider's DNS (resolver or primary server) could not be asked.
    pub const DNS_UNAVAILABLE: &str = "dns_unavailable";

    /// Every code with the HTTP statuses it is sent with (PROTOCOL.md, the OpenAPI document).
    pub const ALL: &[(&str, &[u16])] = &[
        (BAD_KEY, &[400]),
        (BAD_REQUEST, &[400]),
        (BAD_MONTHS, &[400]),
        (PROOF_REQUIRED, &[401]),
        (PROOF_INVALID, &[401]),
        (PROOF_EXPIRED, &[401]),
        (PROOF_REPLAYED, &[401]),
        (PROOF_KEY_MISMATCH, &[401]),
        (BAD_NAME, &[400]),
        (ADDRESS_NOT_RENTED, &[400]),
        (TUNNEL_FORBIDDEN, &[403]),
        (RENTAL_NOT_ACTIVE, &[409]),
        (PTR_LIMIT, &[409]),
        (FORWARD_MISMATCH, &[422]),
        (DNS_UNAVAILABLE, &[503]),
        (NOT_FOUND, &[404]),
        (METHOD_NOT_ALLOWED, &[405]),
        (TIMEOUT, &[408, 503]),
        (CONFLICT, &[409]),
        (TOO_LARGE, &[413]),
        (UNSUPPORTED_MEDIA, &[415]),
        (RATE_LIMITED, &[429]),
        (TOO_MANY_UNPAID, &[429]),
        (INTERNAL, &[500]),
        (BACKEND_ERROR, &[502]),
        (POOL_EXHAUSTED, &[503]),
        (BACKEND_DOWN, &[503]),
        (DATABASE_UNAVAILABLE, &[503]),
    ];
}

/// Why a WireGuard public key is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// Not 32 bytes.
    Length(usize),
    /// All zero: not a key (the "no key" value of `wg`).
    AllZero,
    /// A point of small order on Curve25519 (or a non-canonical encoding of one): every
    /// Diffie-Hellman result with it is one of at most eight values, so no handshake with it
    /// could be secret.
    LowOrder,
    /// Not the canonical encoding of its u-coordinate (the top bit set, or u ≥ 2^255 − 19):
    /// X25519 reads it as another key's point, so one key would have several names (and
    /// several rentals).
    NonCanonical,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Length(n) => write!(f, "expected 32 bytes, got {n}"),
            KeyProblem::AllZero => write!(f, "the all-zero key is not a key"),
            KeyProblem::LowOrder => write!(
                f,
                "a low-order Curve25519 point, with which no shared secret is secret"
            ),
            KeyProblem::NonCanonical => write!(
                f,
                "not a canonical X25519 encoding (top bit set or u >= 2^255-19)"
            ),
        }
    }
}

/// The u-coordinates of the points of small order on Curve25519 and their non-canonical
/// encodings below 2^255 (the top bit is ignored by X25519 and cleared before comparing):
/// 0, 1, the two of order 8, p-1, p, p+1 (libsodium's blocklist).
const LOW_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Checks the bytes of a WireGuard (X25519) public key: 32 bytes, not all zero, not a point
/// of small order, canonically encoded (top bit clear, u < 2^255 − 19, as every X25519
/// implementation makes them). Used wherever a key enters, on the server and in the client.
pub fn check_public_key(bytes: &[u8]) -> Result<[u8; 32], KeyProblem> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyProblem::Length(bytes.len()))?;
    if key == [0; 32] {
        return Err(KeyProblem::AllZero);
    }
    let mut masked = key;
    masked[31] &= 0x7f;
    if LOW_ORDER.contains(&masked) {
        return Err(KeyProblem::LowOrder);
    }
    if !is_canonical(&key) {
        return Err(KeyProblem::NonCanonical);
    }
    Ok(key)
}

/// Whether `key` (little-endian) is below 2^255 − 19 with its top bit clear.
fn is_canonical(key: &[u8; 32]) -> bool {
    if key[31] & 0x80 != 0 {
        return false;
    }
    // u ≥ p only for 0x7fff…ffed..0x7fff…ffff: the top byte 0x7f, the middle all 0xff, the
    // lowest byte at least 0xed.
    !(key[31] == 0x7f && key[1..31].iter().all(|&b| b == 0xff) && key[0] >= 0xed)
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn refuses_wrong_lengths_zero_and_low_order_points() {
        assert_eq!(check_public_key(&[7; 31]), Err(KeyProblem::Length(31)));
        assert_eq!(check_public_key(&[7; 33]), Err(KeyProblem::Length(33)));
        assert_eq!(check_public_key(&[]), Err(KeyProblem::Length(0)));
        assert_eq!(check_public_key(&[0; 32]), Err(KeyProblem::AllZero));
        for p in LOW_ORDER.iter().skip(1) {
            assert_eq!(check_public_key(p), Err(KeyProblem::LowOrder), "{p:02x?}");
            let mut high = *p;
            high[31] |= 0x80;
            assert_eq!(
                check_public_key(&high),
                Err(KeyProblem::LowOrder),
                "{high:02x?}"
            );
        }
        let mut zero_high = [0u8; 32];
        zero_high[31] = 0x80;
        assert_eq!(check_public_key(&zero_high), Err(KeyProblem::LowOrder));
        assert!(check_public_key(&[9; 32]).is_ok());
        // Non-canonical: the top bit set (the same point as without it), or u ≥ p (p and
        // p + 1 are low-order, above).
        let mut top = [9u8; 32];
        top[31] |= 0x80;
        assert_eq!(check_public_key(&top), Err(KeyProblem::NonCanonical));
        for low in [0xef, 0xf6, 0xff] {
            let mut over = [0xffu8; 32];
            over[31] = 0x7f;
            over[0] = low;
            assert_eq!(
                check_public_key(&over),
                Err(KeyProblem::NonCanonical),
                "{low:x}"
            );
        }
        // p − 2: canonical, not low-order (p − 1 is).
        let mut below = [0xffu8; 32];
        below[31] = 0x7f;
        below[0] = 0xeb;
        assert!(check_public_key(&below).is_ok());
        // X25519's base point (u = 9).
        let mut base = [0u8; 32];
        base[0] = 9;
        assert!(check_public_key(&base).is_ok());
    }
}
