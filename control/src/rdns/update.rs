//! The provider's primary DNS server, spoken to with hickory: RFC 2136 UPDATEs and AXFR zone
//! transfers over TCP, every message signed with TSIG (RFC 8945, HMAC-SHA256) and every answer
//! checked against the same key. The key is read from the file `tsig-keygen` writes, which the
//! DNS server's own configuration includes.

use futures_util::StreamExt;
use hickory_client::client::{AsyncClient, ClientHandle, Signer};
use hickory_client::proto::iocompat::AsyncIoTokioAsStd;
use hickory_client::tcp::TcpClientStream;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::dnssec::tsig::TSigner;
use hickory_proto::rr::rdata::{NULL, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::xfer::{DnsHandle, DnsRequest, DnsRequestOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How long one exchange with the server may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Changes per UPDATE message: a repair of a whole /24 is a few messages, each well below
/// the 64 KiB a DNS message over TCP may carry.
pub const CHANGES_PER_UPDATE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot read the TSIG key {0}: {1}")]
    KeyFile(String, String),
    #[error("the DNS server {0} could not be reached or answered nothing usable: {1}")]
    Unavailable(SocketAddr, String),
    #[error("the DNS server refused the {what} of zone {zone}: {code}")]
    Refused {
        what: &'static str,
        zone: String,
        code: String,
    },
}

/// The TSIG key: its name, algorithm and secret, from a `tsig-keygen` file
/// (`key "name" { algorithm hmac-sha256; secret "base64"; };`).
pub fn read_key(path: &Path) -> Result<TSigner, DnsError> {
    let bad = |m: &str| DnsError::KeyFile(path.display().to_string(), m.to_string());
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
    parse_key(&text).map_err(|m| bad(&m))
}

/// Parses the text of a `tsig-keygen` file.
pub fn parse_key(text: &str) -> Result<TSigner, String> {
    use base64::Engine;
    let quoted_after = |word: &str| -> Option<String> {
        let at = text.find(word)? + word.len();
        let rest = &text[at..];
        let start = rest.find('"')? + 1;
        let end = start + rest[start..].find('"')?;
        Some(rest[start..end].to_string())
    };
    let name = quoted_after("key").ok_or("no key \"name\"")?;
    let secret = quoted_after("secret").ok_or("no secret \"...\"")?;
    let algorithm = text
        .find("algorithm")
        .map(|at| {
            text[at + "algorithm".len()..]
                .trim_start()
                .split(|c: char| c == ';' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .trim_matches('"')
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "hmac-sha256".into());
    let algorithm = match algorithm.as_str() {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => return Err(format!("algorithm {other} (use hmac-sha256)")),
    };
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| "the secret is not base64".to_string())?;
    if secret.len() < 16 {
        return Err("the secret is shorter than 16 bytes".into());
    }
    let mut name = Name::from_str(&name).map_err(|e| format!("key name: {e}"))?;
    name.set_fqdn(true);
    TSigner::new(secret, algorithm, name, 300).map_err(|e| e.to_string())
}

/// One change: the PTR rrset at `owner` becomes `target` alone, or goes (None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub owner: Name,
    pub target: Option<Name>,
}

/// The primary server of the reverse zones.
#[derive(Clone)]
pub struct Primary {
    pub server: SocketAddr,
    signer: TSigner,
}

impl Primary {
    pub fn new(server: SocketAddr, signer: TSigner) -> Primary {
        Primary { server, signer }
    }

    async fn connect(&self) -> Result<AsyncClient, DnsError> {
        let (stream, handle) =
            TcpClientStream::<AsyncIoTokioAsStd<tokio::net::TcpStream>>::with_timeout(
                self.server,
                TIMEOUT,
            );
        let signer = Arc::new(Signer::from(self.signer.clone()));
        let (client, background) = AsyncClient::with_timeout(stream, handle, TIMEOUT, Some(signer))
            .await
            .map_err(|e| DnsError::Unavailable(self.server, e.to_string()))?;
        tokio::spawn(background);
        Ok(client)
    }

    /// Sends `changes` to `zone` as UPDATEs of at most [`CHANGES_PER_UPDATE`] changes each
    /// (each message applied whole or not at all by the server). Returns how many messages
    /// were sent.
    pub async fn apply(
        &self,
        zone: &Name,
        changes: &[Change],
        ttl: u32,
    ) -> Result<usize, DnsError> {
        if changes.is_empty() {
            return Ok(0);
        }
        let client = self.connect().await?;
        let mut sent = 0;
        for chunk in changes.chunks(CHANGES_PER_UPDATE) {
            let message = update_message(zone, chunk, ttl);
            let mut answers = client.send(DnsRequest::new(message, DnsRequestOptions::default()));
            let answer = tokio::time::timeout(TIMEOUT, answers.next())
                .await
                .map_err(|_| DnsError::Unavailable(self.server, "timed out".into()))?
                .ok_or_else(|| DnsError::Unavailable(self.server, "no answer".into()))?
                .map_err(|e| DnsError::Unavailable(self.server, e.to_string()))?;
            sent += 1;
            if answer.response_code() != ResponseCode::NoError {
                return Err(DnsError::Refused {
                    what: "update",
                    zone: zone.to_ascii(),
                    code: answer.response_code().to_string(),
                });
            }
        }
        Ok(sent)
    }

    /// The zone's PTR records by owner (AXFR, signed).
    pub async fn transfer(&self, zone: &Name) -> Result<BTreeMap<Name, Vec<Name>>, DnsError> {
        let mut client = self.connect().await?;
        let mut answers = client.zone_transfer(zone.clone(), None);
        let mut out: BTreeMap<Name, Vec<Name>> = BTreeMap::new();
        let mut any = false;
        loop {
            let next = tokio::time::timeout(TIMEOUT, answers.next())
                .await
                .map_err(|_| {
                    DnsError::Unavailable(self.server, "zone transfer timed out".into())
                })?;
            let Some(answer) = next else { break };
            let answer = answer.map_err(|e| DnsError::Unavailable(self.server, e.to_string()))?;
            if answer.response_code() != ResponseCode::NoError {
                return Err(DnsError::Refused {
                    what: "zone transfer",
                    zone: zone.to_ascii(),
                    code: answer.response_code().to_string(),
                });
            }
            for r in answer.answers() {
                any = true;
                if let Some(RData::PTR(PTR(target))) = r.data() {
                    out.entry(r.name().to_lowercase())
                        .or_default()
                        .push(target.to_lowercase());
                }
            }
        }
        if !any {
            return Err(DnsError::Unavailable(
                self.server,
                format!("the transfer of {zone} was empty"),
            ));
        }
        Ok(out)
    }
}

/// One UPDATE of `zone`: per change, delete the owner's PTR rrset, then add the new record.
fn update_message(zone: &Name, changes: &[Change], ttl: u32) -> Message {
    let mut query = Query::new();
    query
        .set_name(zone.clone())
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    message.add_zone(query);
    for c in changes {
        // RFC 2136 2.5.2: class ANY, TTL 0, empty rdata deletes the whole rrset.
        let mut delete = Record::with(c.owner.clone(), RecordType::PTR, 0);
        delete.set_dns_class(DNSClass::ANY);
        delete.set_data(Some(RData::NULL(NULL::new())));
        message.add_update(delete);
        if let Some(target) = &c.target {
            let mut add = Record::from_rdata(c.owner.clone(), ttl, RData::PTR(PTR(target.clone())));
            add.set_dns_class(DNSClass::IN);
            message.add_update(add);
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let text = "key \"staticwire-rdns\" {\n\talgorithm hmac-sha256;\n\tsecret \"2hOEy+Ap3r1yjgfNVOL/zRWuXtd+fwn2LWUfqxLQpX4=\";\n};\n";
        let k = parse_key(text).unwrap();
        assert_eq!(k.signer_name().to_ascii(), "staticwire-rdns.");
        assert_eq!(k.algorithm(), &TsigAlgorithm::HmacSha256);
        assert_eq!(k.key().len(), 32);
        assert!(parse_key("key \"x\" { algorithm hmac-md5; secret \"2hOEy+Ap3r1yjgfNVOL/zRWuXtd+fwn2LWUfqxLQpX4=\"; };").is_err());
        assert!(parse_key("key \"x\" { secret \"AAAA\"; };").is_err());
        assert!(parse_key("nothing").is_err());
    }

    #[test]
    fn an_update_deletes_then_adds_per_owner() {
        let zone = Name::from_ascii("8-29.113.0.203.in-addr.arpa.").unwrap();
        let owner = Name::from_ascii("10.8-29.113.0.203.in-addr.arpa.").unwrap();
        let target = Name::from_ascii("mail.example.net.").unwrap();
        let m = update_message(
            &zone,
            &[
                Change {
                    owner: owner.clone(),
                    target: Some(target.clone()),
                },
                Change {
                    owner: owner.clone(),
                    target: None,
                },
            ],
            300,
        );
        assert_eq!(m.op_code(), OpCode::Update);
        let u = m.updates();
        assert_eq!(u.len(), 3);
        assert_eq!(u[0].dns_class(), DNSClass::ANY);
        assert_eq!(u[1].data(), Some(&RData::PTR(PTR(target))));
        assert_eq!(u[2].dns_class(), DNSClass::ANY);
        // It round-trips through hickory's own wire format.
        let bytes = m.to_vec().unwrap();
        assert_eq!(Message::from_vec(&bytes).unwrap().updates().len(), 3);
    }
}
