//! Bitcoin network names: what the terms publish, what nodes and configs call a chain, and
//! which network a BOLT11 invoice is for. A leaf: the config, the Lightning backends and the
//! service all read networks through here.

/// The network name the terms publish (as the invoice prefix encodes it) for what a node or
/// a config calls its chain: LND says `mainnet`, CLN `bitcoin`; testnet4 invoices are `lntb`.
pub fn normalize_network(name: &str) -> Option<&'static str> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "bitcoin" | "mainnet" => "bitcoin",
        "testnet" | "testnet3" | "testnet4" => "testnet",
        "signet" => "signet",
        "regtest" => "regtest",
        "simnet" => "simnet",
        _ => return None,
    })
}

/// The network a BOLT11 invoice is for, by its currency prefix.
pub fn invoice_network(bolt11: &str) -> Option<&'static str> {
    let inv: lightning_invoice::Bolt11Invoice = bolt11.trim().parse().ok()?;
    Some(currency_name(inv.currency()))
}

/// A BOLT11 currency in the terms' spelling of networks.
pub fn currency_name(c: lightning_invoice::Currency) -> &'static str {
    use lightning_invoice::Currency;
    match c {
        Currency::Bitcoin => "bitcoin",
        Currency::BitcoinTestnet => "testnet",
        Currency::Regtest => "regtest",
        Currency::Simnet => "simnet",
        Currency::Signet => "signet",
    }
}
