//! PROTOCOL.md 3.1, proof of key possession: the server publishes a usable proof key, refuses
//! every request on a rental that carries no proof, and refuses a forged proof, a proof of another key, a stale one and a replayed one with their
//! 401 codes, while the holder's own proof is accepted. Nothing here holds an address.

use super::harness::{ensure, Suite};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde_json::json;
use staticwire_api::proof::{fresh_nonce, proof_public_key, unix_now, Prover};
use staticwire_api::{self as api, check_public_key};

fn private_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    k
}

pub(super) async fn proofs(s: &mut Suite<'_>, t: &api::Terms) {
    let proof_key: Option<[u8; 32]> = t
        .proof_key
        .as_deref()
        .and_then(|k| STANDARD.decode(k).ok())
        .and_then(|k| k.try_into().ok());
    let usable = proof_key.filter(|k| check_public_key(k).is_ok());
    s.check(
        "terms.proof-key",
        "The terms publish a usable X25519 proof key (v1.1)",
        ensure(usable.is_some(), || format!("proof_key {:?}", t.proof_key)),
    );
    let Some(server) = usable else {
        s.skip("proof.*", "Proof of key possession", "no usable proof_key");
        return;
    };
    let (victim, stranger) = (private_key(), private_key());
    let victim_pub = STANDARD.encode(proof_public_key(&victim));
    let body = json!({ "public_key": victim_pub }).to_string().into_bytes();
    let (Ok(holder), Ok(other)) = (
        Prover::new(&victim, &server),
        Prover::new(&stranger, &server),
    ) else {
        s.skip(
            "proof.*",
            "Proof of key possession",
            "cannot prove with this proof key",
        );
        return;
    };
    let rent = |who: &Prover, claim: Option<[u8; 32]>, ts: u64| {
        let mut p = who.prove_at("POST", "/v1/rentals", &body, ts, fresh_nonce());
        if let Some(k) = claim {
            p.key = k;
        }
        p.header_value()
    };
    let victim_key = proof_public_key(&victim);

    // No proof at all, on every route that acts on or reveals a rental (the victim's key is
    // not the suite's: these go out without an Authorization header).
    let path = super::harness::rental_path(&victim_pub);
    let unknown_hash = "0".repeat(64);
    let mut unproven = Vec::new();
    for (method, target, body) in [
        ("POST", "/v1/rentals".to_string(), Some(body.clone())),
        ("GET", path.clone(), None),
        ("GET", super::harness::config_path(&victim_pub), None),
        (
            "POST",
            format!("{path}/renewals"),
            Some(br#"{"months":1}"#.to_vec()),
        ),
        ("GET", format!("/v1/invoices/{unknown_hash}"), None),
        ("GET", format!("{path}/ptr"), None),
        (
            "PUT",
            format!("{path}/ptr"),
            Some(br#"{"name":"mail.example.net"}"#.to_vec()),
        ),
        ("DELETE", format!("{path}/ptr"), Some(b"{}".to_vec())),
    ] {
        let ctype = body.as_ref().map(|_| "application/json");
        let r = s.http.send(method, &target, ctype, body).await;
        if let Err(e) = s.expect_error(&r, 401, "proof_required") {
            unproven.push(format!("{method} {target}: {e}"));
        }
    }
    s.check(
        "proof.required",
        "A request on a rental without a proof is refused 401 proof_required (an invoice look-up too, known or not; the reverse-DNS routes too)",
        ensure(unproven.is_empty(), || unproven.join("; ")),
    );

    let forged = rent(&other, Some(victim_key), unix_now());
    let r = s
        .http
        .send_authorized("POST", "/v1/rentals", Some(body.clone()), &forged)
        .await;
    let c = s.expect_error(&r, 401, "proof_invalid");
    s.check(
        "proof.forged",
        "A proof made with another private key is refused",
        c,
    );

    let mismatch = rent(&other, None, unix_now());
    let r = s
        .http
        .send_authorized("POST", "/v1/rentals", Some(body.clone()), &mismatch)
        .await;
    let c = s.expect_error(&r, 401, "proof_key_mismatch");
    s.check(
        "proof.other-key",
        "A proof of another key than the body names is refused",
        c,
    );

    let stale = rent(&holder, None, unix_now().saturating_sub(600));
    let r = s
        .http
        .send_authorized("POST", "/v1/rentals", Some(body.clone()), &stale)
        .await;
    let c = s.expect_error(&r, 401, "proof_expired");
    s.check("proof.expired", "A proof ten minutes old is refused", c);

    // The holder's proof is accepted (no rental yet: 404, so nothing is held), and the same
    // proof again is a replay.
    let good = holder.prove("GET", &path, b"").header_value();
    let r = s.http.send_authorized("GET", &path, None, &good).await;
    let c = s.expect_error(&r, 404, "not_found");
    s.check("proof.accepted", "The holder's own proof is accepted", c);
    let r = s.http.send_authorized("GET", &path, None, &good).await;
    let c = s.expect_error(&r, 401, "proof_replayed");
    s.check("proof.replayed", "The same proof sent again is refused", c);
}
