//! PROTOCOL.md §6 GET /v1/rentals/{public_key}/config — GetConf: the wg-quick file of an
//! active rental.

use super::harness::{config_path, ensure, Check, Suite};
use serde_json::Value;
use staticwire_api as api;

/// GetConf of the active rental of `key`, holding `address`.
pub(super) async fn get(s: &mut Suite<'_>, t: &api::Terms, key: &str, address: &str) {
    let r = s.http.get(&config_path(key)).await;
    let c = s
        .expect(&r, 200, "ConfigResponse")
        .and_then(|v| config_ok(&v, t, address));
    s.check(
        "config.get",
        "GetConf: the wg-quick file for the rented address and a published server, without a private key",
        c,
    );
}

fn config_ok(v: &Value, t: &api::Terms, address: &str) -> Check {
    let c: api::ConfigResponse = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    ensure(c.address == address, || format!("address {}", c.address))?;
    ensure(
        t.servers
            .iter()
            .any(|s| s.endpoint == c.endpoint && s.public_key == c.server_public_key),
        || {
            format!(
                "server {} {} not in the terms",
                c.endpoint, c.server_public_key
            )
        },
    )?;
    let mut sections = Vec::new();
    for line in c.wg_quick.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            sections.push(line.to_ascii_lowercase());
            continue;
        }
        let (k, _) = line
            .split_once('=')
            .ok_or_else(|| format!("wg-quick line {line:?}"))?;
        let k = k.trim().to_ascii_lowercase();
        ensure(k != "privatekey", || "the file carries a PrivateKey".into())?;
        ensure(
            [
                "address",
                "dns",
                "mtu",
                "listenport",
                "publickey",
                "presharedkey",
                "endpoint",
                "allowedips",
                "persistentkeepalive",
            ]
            .contains(&k.as_str()),
            || format!("wg-quick key {k:?} is not one a server may send"),
        )?;
    }
    ensure(sections == ["[interface]", "[peer]"], || {
        format!("sections {sections:?}")
    })?;
    ensure(c.wg_quick.contains(address), || {
        "the file lacks the address".into()
    })
}
