//! Forward confirmation: a PTR is set only when its name resolves (A/AAAA) to the address, asked
//! of the provider's own resolver with hickory-resolver (no cache: the customer may just have
//! changed its records).

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::TokioAsyncResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{name} does not resolve to {address} (its A/AAAA records: {found}); add the record, then set the PTR")]
    Mismatch {
        name: String,
        address: IpAddr,
        found: String,
    },
    #[error("the resolver {0} could not be asked: {1}")]
    Unavailable(SocketAddr, String),
}

/// Checks that `name` (absolute) has `address` among its A/AAAA records.
pub async fn confirm(
    resolver: SocketAddr,
    name: &str,
    address: IpAddr,
) -> Result<(), ForwardError> {
    let group = NameServerConfigGroup::from_ips_clear(&[resolver.ip()], resolver.port(), true);
    let config = ResolverConfig::from_parts(None, vec![], group);
    let mut opts = ResolverOpts::default();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    opts.use_hosts_file = false;
    opts.cache_size = 1;
    let resolver_client = TokioAsyncResolver::tokio(config, opts);
    let found: Vec<IpAddr> = match resolver_client.lookup_ip(name).await {
        Ok(l) => l.iter().collect(),
        Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => Vec::new(),
        Err(e) => return Err(ForwardError::Unavailable(resolver, e.to_string())),
    };
    if found.contains(&address) {
        return Ok(());
    }
    Err(ForwardError::Mismatch {
        name: name.to_string(),
        address,
        found: if found.is_empty() {
            "none".into()
        } else {
            found
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    })
}
