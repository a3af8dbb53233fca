//! Opening a WireGuard handshake initiation far enough to learn who sent it and when.
//!
//! The router keeps no session state for idle peers, so it must remember each peer's newest
//! initiation timestamp itself: a fresh session would otherwise accept a replayed old
//! initiation (and move the peer's endpoint to whoever replayed it). This follows the Noise IK
//! responder steps of the WireGuard paper up to the timestamp; boringtun's `Tunn` then does the
//! full handshake as before.

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Digest};
use boringtun::x25519::{PublicKey, StaticSecret};
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::ChaCha20Poly1305;

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// Type 1, the message's length, and where its fields sit.
pub const INITIATION_LEN: usize = 148;
const EPHEMERAL: std::ops::Range<usize> = 8..40;
const STATIC: std::ops::Range<usize> = 40..88;
const TIMESTAMP: std::ops::Range<usize> = 88..116;

/// A TAI64N timestamp: big-endian seconds then nanoseconds, so byte order is time order.
pub type Timestamp = [u8; 12];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a handshake initiation")]
    Malformed,
    #[error("initiation does not decrypt")]
    Auth,
}

fn hash(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, a);
    Digest::update(&mut h, b);
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = hmac::SimpleHmac::<Blake2s256>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize_fixed().into()
}

/// WireGuard's KDF2: a new chaining key and a message key.
fn kdf2(chaining: &[u8; 32], input: &[u8]) -> ([u8; 32], [u8; 32]) {
    let prk = hmac(chaining, &[input]);
    let t1 = hmac(&prk, &[&[1]]);
    let t2 = hmac(&prk, &[&t1, &[2]]);
    (t1, t2)
}

fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8], out: &mut [u8]) -> Result<(), OpenError> {
    // Handshake messages use nonce 0.
    let plain = ChaCha20Poly1305::new(key.into())
        .decrypt(&[0u8; 12].into(), Payload { msg: sealed, aad })
        .map_err(|_| OpenError::Auth)?;
    if plain.len() != out.len() {
        return Err(OpenError::Auth);
    }
    out.copy_from_slice(&plain);
    Ok(())
}

/// The responder's precomputed start of every transcript: HASH(HASH(C || IDENTIFIER) || S_r).
pub fn responder_hash(public: &PublicKey) -> [u8; 32] {
    let chaining = hash(CONSTRUCTION, &[]);
    hash(&hash(&chaining, IDENTIFIER), public.as_bytes())
}

/// An initiation opened up to its sender's static key.
pub struct Opened {
    pub peer: [u8; 32],
    chaining: [u8; 32],
    hash: [u8; 32],
    sealed_timestamp: [u8; 28],
}

/// Decrypts the sender's static key (one Diffie-Hellman). `msg` is the whole datagram.
pub fn open_static(
    secret: &StaticSecret,
    responder_hash: &[u8; 32],
    msg: &[u8],
) -> Result<Opened, OpenError> {
    if msg.len() != INITIATION_LEN || msg[0] != 1 {
        return Err(OpenError::Malformed);
    }
    let ephemeral: [u8; 32] = msg[EPHEMERAL].try_into().expect("32 bytes");
    let chaining = hmac(&hmac(&hash(CONSTRUCTION, &[]), &[&ephemeral]), &[&[1]]);
    let h = hash(responder_hash, &ephemeral);
    let shared = secret.diffie_hellman(&PublicKey::from(ephemeral));
    let (chaining, key) = kdf2(&chaining, shared.as_bytes());
    let mut peer = [0u8; 32];
    open(&key, &msg[STATIC], &h, &mut peer)?;
    Ok(Opened {
        peer,
        chaining,
        hash: hash(&h, &msg[STATIC]),
        sealed_timestamp: msg[TIMESTAMP].try_into().expect("28 bytes"),
    })
}

impl Opened {
    /// Decrypts the timestamp with DH(S_r, S_i), which the caller caches per peer.
    pub fn timestamp(&self, static_shared: &[u8; 32]) -> Result<Timestamp, OpenError> {
        let (_, key) = kdf2(&self.chaining, static_shared);
        let mut ts = [0u8; 12];
        open(&key, &self.sealed_timestamp, &self.hash, &mut ts)?;
        Ok(ts)
    }
}

/// An initiation that claims to come from `claimed` (anyone's public key) without its private
/// key: the static key encrypts fine, the timestamp cannot. For tests of forged handshakes.
#[cfg(test)]
pub(crate) fn forge(server: &PublicKey, claimed: &[u8; 32]) -> Vec<u8> {
    use blake2::Blake2sMac;
    use chacha20poly1305::aead::Aead;
    let eph = StaticSecret::random_from_rng(rand_core::OsRng);
    let eph_pub = PublicKey::from(&eph);
    let mut msg = vec![0u8; INITIATION_LEN];
    msg[0] = 1;
    msg[4..8].copy_from_slice(&7u32.to_le_bytes());
    msg[EPHEMERAL].copy_from_slice(eph_pub.as_bytes());
    let chaining = hmac(
        &hmac(&hash(CONSTRUCTION, &[]), &[eph_pub.as_bytes()]),
        &[&[1]],
    );
    let h = hash(&responder_hash(server), eph_pub.as_bytes());
    let (_, key) = kdf2(&chaining, eph.diffie_hellman(server).as_bytes());
    let sealed = ChaCha20Poly1305::new((&key).into())
        .encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: claimed,
                aad: &h,
            },
        )
        .expect("seal");
    msg[STATIC].copy_from_slice(&sealed);
    msg[TIMESTAMP].fill(0x55); // not sealed with DH(S_i, S_r): nobody but the owner can
    let mac1_key = hash(b"mac1----", server.as_bytes());
    let mut mac = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(&mac1_key)
        .expect("key");
    Update::update(&mut mac, &msg[..116]);
    msg[116..132].copy_from_slice(&mac.finalize_fixed());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::{Tunn, TunnResult};
    use rand_core::OsRng;

    fn initiation(client: &mut Tunn) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        match client.format_handshake_initiation(&mut buf, true) {
            TunnResult::WriteToNetwork(m) => m.to_vec(),
            _ => panic!("no initiation"),
        }
    }

    #[test]
    fn opens_what_boringtun_sends_and_orders_timestamps() {
        let server = StaticSecret::random_from_rng(OsRng);
        let server_pub = PublicKey::from(&server);
        let client_secret = StaticSecret::random_from_rng(OsRng);
        let client_pub = PublicKey::from(&client_secret);
        let mut client = Tunn::new(client_secret.clone(), server_pub, None, None, 1, None).unwrap();
        let rh = responder_hash(&server_pub);
        let ss = server.diffie_hellman(&client_pub).to_bytes();

        let first = initiation(&mut client);
        let opened = open_static(&server, &rh, &first).unwrap();
        assert_eq!(opened.peer, *client_pub.as_bytes());
        let t1 = opened.timestamp(&ss).unwrap();

        std::thread::sleep(std::time::Duration::from_millis(40));
        let second = initiation(&mut client);
        let t2 = open_static(&server, &rh, &second)
            .unwrap()
            .timestamp(&ss)
            .unwrap();
        assert!(t2 > t1, "a later initiation carries a later timestamp");

        // The wrong static-static secret, a flipped bit, a wrong length: refused, no panic.
        assert_eq!(opened.timestamp(&[7u8; 32]), Err(OpenError::Auth));
        let mut bad = first.clone();
        bad[50] ^= 1;
        assert!(matches!(
            open_static(&server, &rh, &bad),
            Err(OpenError::Auth)
        ));
        assert!(matches!(
            open_static(&server, &rh, &first[..100]),
            Err(OpenError::Malformed)
        ));
        let other = StaticSecret::random_from_rng(OsRng);
        assert!(open_static(&other, &responder_hash(&PublicKey::from(&other)), &first).is_err());
    }
}
