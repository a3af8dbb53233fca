//! The PROTOCOL.md test vector, and every way a proof can be wrong.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

// RFC 7748 section 6.1: Alice is the client, Bob the server's proof key.
const CLIENT_PRIVATE: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const PROOF_PRIVATE: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const CLIENT_PUBLIC_B64: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
const PROOF_KEY_B64: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
const K_HEX: &str = "d397ce057172e175b94954d40b44b5b0f1437978d566a35a54536777f18044cb";
const TS: u64 = 1795637704;
const NONCE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const BODY: &str = r#"{"public_key":"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="}"#;
const MESSAGE: &str = "POST\n/v1/rentals\n1795637704\n000102030405060708090a0b0c0d0e0f\nb86d2541313be95eb29907cdd8054081335313bb1c49e1035a0d8d521ac7872e";
const HEADER: &str = r#"StaticWire-Proof key="hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", ts="1795637704", nonce="AAECAwQFBgcICQoLDA0ODw==", mac="Zncdp8fXZlMVLS/fqf76vijNxQ/Cu+npQJ/82fjNa64=""#;
const STATUS_PATH: &str = "/v1/rentals/hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=";
const STATUS_MAC_B64: &str = "Bhj7dOZpXLX8rKLSnR/ZiOI05wSlxbDQFJ79mdxoLPM=";

fn prover() -> Prover {
    let proof_key = proof_public_key(&arr(PROOF_PRIVATE));
    Prover::new(&arr(CLIENT_PRIVATE), &proof_key).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(arr(PROOF_PRIVATE), 1000)
}

fn client_key() -> [u8; 32] {
    STANDARD
        .decode(CLIENT_PUBLIC_B64)
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn protocol_md_test_vector() {
    assert_eq!(
        STANDARD.encode(proof_public_key(&arr(PROOF_PRIVATE))),
        PROOF_KEY_B64
    );
    let p = prover();
    assert_eq!(STANDARD.encode(p.public_key()), CLIENT_PUBLIC_B64);
    let proof_key = STANDARD.decode(PROOF_KEY_B64).unwrap().try_into().unwrap();
    let k = MacKey::for_client(&arr(CLIENT_PRIVATE), &proof_key).unwrap();
    assert_eq!(k.as_bytes(), &arr(K_HEX));
    let server_k = MacKey::for_server(&arr(PROOF_PRIVATE), &client_key()).unwrap();
    assert_eq!(server_k.as_bytes(), &arr(K_HEX));
    assert_eq!(
        message("POST", "/v1/rentals", TS, &NONCE, BODY.as_bytes()),
        MESSAGE
    );
    let proof = p.prove_at("POST", "/v1/rentals", BODY.as_bytes(), TS, NONCE);
    assert_eq!(proof.header_value(), HEADER);
    assert_eq!(Proof::parse(HEADER), Ok(proof));
    let get = p.prove_at("GET", STATUS_PATH, b"", TS, NONCE);
    assert_eq!(STANDARD.encode(get.mac), STATUS_MAC_B64);
}

#[test]
fn the_server_accepts_the_vector_once() {
    let v = verifier();
    let key = client_key();
    let ok = v.verify(
        Some(HEADER),
        Some(&key),
        "POST",
        "/v1/rentals",
        BODY.as_bytes(),
        TS + 5,
    );
    assert_eq!(ok, Ok(key));
    assert_eq!(v.remembered(), 1);
    let again = v.verify(
        Some(HEADER),
        Some(&key),
        "POST",
        "/v1/rentals",
        BODY.as_bytes(),
        TS + 6,
    );
    assert_eq!(again, Err(ProofError::Replayed));
    assert_eq!(again.unwrap_err().code(), "proof_replayed");
}

#[test]
fn replay_fails_outside_the_window_too() {
    let v = verifier();
    let key = client_key();
    let late = v.verify(
        Some(HEADER),
        Some(&key),
        "POST",
        "/v1/rentals",
        BODY.as_bytes(),
        TS + WINDOW_SECONDS + 1,
    );
    assert_eq!(
        late,
        Err(ProofError::Expired {
            ts: TS,
            now: TS + WINDOW_SECONDS + 1
        })
    );
    assert_eq!(late.unwrap_err().code(), "proof_expired");
    let early = v.verify(
        Some(HEADER),
        Some(&key),
        "POST",
        "/v1/rentals",
        BODY.as_bytes(),
        TS - WINDOW_SECONDS - 1,
    );
    assert!(matches!(early, Err(ProofError::Expired { .. })));
    // The edges of the window are inside it.
    assert!(v
        .verify(
            Some(HEADER),
            Some(&key),
            "POST",
            "/v1/rentals",
            BODY.as_bytes(),
            TS + WINDOW_SECONDS
        )
        .is_ok());
    // Nothing refused was remembered; the accepted one is forgotten once it cannot be fresh.
    assert_eq!(v.remembered(), 1);
    let other = prover().prove_at("GET", STATUS_PATH, b"", TS + 200, NONCE);
    v.verify(
        Some(&other.header_value()),
        Some(&key),
        "GET",
        STATUS_PATH,
        b"",
        TS + 200,
    )
    .unwrap();
    assert_eq!(v.remembered(), 1, "the first proof was pruned");
}

#[test]
fn anything_altered_fails_the_mac() {
    let v = verifier();
    let key = client_key();
    let now = TS;
    let check = |method: &str, target: &str, body: &[u8], header: &str| {
        v.verify(Some(header), Some(&key), method, target, body, now)
    };
    let body = BODY.as_bytes();
    assert_eq!(
        check("GET", "/v1/rentals", body, HEADER),
        Err(ProofError::BadMac)
    );
    assert_eq!(
        check("POST", "/v1/rentals?x=1", body, HEADER),
        Err(ProofError::BadMac)
    );
    assert_eq!(
        check("POST", "/v1/rentals/", body, HEADER),
        Err(ProofError::BadMac)
    );
    let altered = BODY.replace('}', r#","prefix_len":29}"#);
    assert_eq!(
        check("POST", "/v1/rentals", altered.as_bytes(), HEADER),
        Err(ProofError::BadMac)
    );
    let ts_moved = HEADER.replace("1795637704", "1795637705");
    assert_eq!(
        check("POST", "/v1/rentals", body, &ts_moved),
        Err(ProofError::BadMac)
    );
    let nonce_changed = HEADER.replace("AAECAwQFBgcICQoLDA0ODw==", "AQECAwQFBgcICQoLDA0ODw==");
    assert_eq!(
        check("POST", "/v1/rentals", body, &nonce_changed),
        Err(ProofError::BadMac)
    );
    let mac_flipped = HEADER.replace("Zncdp8", "Zncdp9");
    assert_eq!(
        check("POST", "/v1/rentals", body, &mac_flipped),
        Err(ProofError::BadMac)
    );
    assert_eq!(ProofError::BadMac.code(), "proof_invalid");
    // Lower-case method names are the same method.
    assert!(check("post", "/v1/rentals", body, HEADER).is_ok());
    assert_eq!(v.remembered(), 1);
}

#[test]
fn a_stranger_cannot_prove_someone_elses_key() {
    let v = verifier();
    let victim = client_key();
    let proof_key = proof_public_key(&arr(PROOF_PRIVATE));
    // The squatter has its own private key, and names the victim's public key.
    let squatter = Prover::new(&[42u8; 32], &proof_key).unwrap();
    let mut forged = squatter.prove_at("POST", "/v1/rentals", BODY.as_bytes(), TS, NONCE);
    assert_eq!(
        v.verify(
            Some(&forged.header_value()),
            Some(&victim),
            "POST",
            "/v1/rentals",
            BODY.as_bytes(),
            TS
        ),
        Err(ProofError::KeyMismatch)
    );
    // Claiming the victim's key in the header: the MAC is over the squatter's K.
    forged.key = victim;
    assert_eq!(
        v.verify(
            Some(&forged.header_value()),
            Some(&victim),
            "POST",
            "/v1/rentals",
            BODY.as_bytes(),
            TS
        ),
        Err(ProofError::BadMac)
    );
    // A proof made for another server's proof key does not verify here.
    let elsewhere = Prover::new(&arr(CLIENT_PRIVATE), &proof_public_key(&[7u8; 32])).unwrap();
    let p = elsewhere.prove_at("POST", "/v1/rentals", BODY.as_bytes(), TS, NONCE);
    assert_eq!(
        v.verify(
            Some(&p.header_value()),
            Some(&victim),
            "POST",
            "/v1/rentals",
            BODY.as_bytes(),
            TS
        ),
        Err(ProofError::BadMac)
    );
    assert_eq!(ProofError::KeyMismatch.code(), "proof_key_mismatch");
    assert_eq!(v.remembered(), 0);
}

#[test]
fn missing_and_malformed_headers() {
    let v = verifier();
    let run = |h: Option<&str>| v.verify(h, None, "POST", "/v1/rentals", BODY.as_bytes(), TS);
    assert_eq!(run(None), Err(ProofError::Required));
    assert_eq!(ProofError::Required.code(), "proof_required");
    assert_eq!(run(Some("Bearer abc")), Err(ProofError::Required));
    for bad in [
        "StaticWire-Proof",
        "StaticWire-Proof key=\"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\"",
        &HEADER.replace("ts=\"1795637704\"", "ts=\"-5\""),
        &HEADER.replace("ts=\"1795637704\"", "ts=\"1e9\""),
        &HEADER.replace("ts=\"1795637704\"", "ts=\"99999999999999999999\""),
        &HEADER.replace(", mac=", ", ts=\"1795637704\", mac="),
        &HEADER.replace("AAECAwQFBgcICQoLDA0ODw==", "AAEC"),
        &HEADER.replace("Zncdp8fXZlMVLS/fqf76vijNxQ/Cu+npQJ/82fjNa64=", "!!"),
        &HEADER.replace("key=\"", "key=\"\\"),
        &format!("{HEADER}{}", " ".repeat(2000)),
    ] {
        assert!(
            matches!(run(Some(bad)), Err(ProofError::Malformed(_))),
            "{bad}: {:?}",
            run(Some(bad))
        );
    }
    // Case, order, quoting and spacing are free; unknown parameters are ignored.
    let relaxed = "staticwire-proof MAC=Zncdp8fXZlMVLS/fqf76vijNxQ/Cu+npQJ/82fjNa64=,nonce=\"AAECAwQFBgcICQoLDA0ODw==\" ,  future=\"x\", ts=1795637704, key=\"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\"";
    assert_eq!(run(Some(relaxed)), Ok(client_key()));
}

#[test]
fn unusable_keys_are_refused() {
    let v = verifier();
    let mut p = prover().prove_at("POST", "/v1/rentals", BODY.as_bytes(), TS, NONCE);
    p.key = [0; 32];
    assert_eq!(
        v.verify(
            Some(&p.header_value()),
            None,
            "POST",
            "/v1/rentals",
            BODY.as_bytes(),
            TS
        ),
        Err(ProofError::BadKey(KeyProblem::AllZero))
    );
    let mut one = [0u8; 32];
    one[0] = 1;
    p.key = one;
    assert_eq!(
        v.verify(
            Some(&p.header_value()),
            None,
            "POST",
            "/v1/rentals",
            BODY.as_bytes(),
            TS
        ),
        Err(ProofError::BadKey(KeyProblem::LowOrder))
    );
    // A client refuses a low-order proof key, whose DH result anyone could guess.
    assert_eq!(
        Prover::new(&arr(CLIENT_PRIVATE), &one).unwrap_err(),
        ProofError::BadKey(KeyProblem::LowOrder)
    );
    assert_eq!(
        ProofError::BadKey(KeyProblem::AllZero).code(),
        "proof_invalid"
    );
}

#[test]
fn a_full_replay_cache_refuses_rather_than_forgets() {
    let v = Verifier::new(arr(PROOF_PRIVATE), 2);
    let p = prover();
    let key = client_key();
    let mut nonce = NONCE;
    let mut send = |n: u8, now: u64| {
        nonce[0] = n;
        let proof = p.prove_at("GET", STATUS_PATH, b"", TS, nonce);
        v.verify(
            Some(&proof.header_value()),
            Some(&key),
            "GET",
            STATUS_PATH,
            b"",
            now,
        )
    };
    assert!(send(1, TS).is_ok());
    assert!(send(2, TS).is_ok());
    let full = send(3, TS);
    assert_eq!(full, Err(ProofError::CacheFull));
    assert_eq!(
        (full.unwrap_err().status(), ProofError::Replayed.status()),
        (429, 401)
    );
    // Once the first two can no longer be fresh, there is room again (for a fresh proof).
    nonce[0] = 4;
    let later = p.prove_at("GET", STATUS_PATH, b"", TS + 121, nonce);
    assert!(v
        .verify(
            Some(&later.header_value()),
            Some(&key),
            "GET",
            STATUS_PATH,
            b"",
            TS + 121
        )
        .is_ok());
}

#[test]
fn every_proof_code_is_a_documented_401() {
    for e in [
        ProofError::Required,
        ProofError::Malformed("x"),
        ProofError::BadMac,
        ProofError::Expired { ts: 0, now: 0 },
        ProofError::Replayed,
        ProofError::KeyMismatch,
    ] {
        let statuses = crate::codes::ALL
            .iter()
            .find(|(c, _)| *c == e.code())
            .map(|(_, s)| *s);
        assert_eq!(statuses, Some(&[401u16][..]), "{e:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn fresh_nonces_differ() {
    assert_ne!(fresh_nonce(), fresh_nonce());
    let a = prover().prove("GET", STATUS_PATH, b"");
    let b = prover().prove("GET", STATUS_PATH, b"");
    assert_ne!(
        a.mac, b.mac,
        "the same request twice in a second is two proofs"
    );
}
