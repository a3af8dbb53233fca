//! 32-byte WireGuard keys: parsing and printing in the encodings UAPI (hex) and users (base64) use.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;

/// A Curve25519 public key, private key or preshared key. Comparison is not constant-time: keys in
/// this table are identities (public keys), never secrets compared against attacker input.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must be 64 hex characters")]
    BadHex,
    #[error("key must be 44 characters of base64 encoding 32 bytes")]
    BadBase64,
}

impl Key {
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut k = [0u8; 32];
        if s.len() != 64 {
            return Err(KeyError::BadHex);
        }
        hex::decode_to_slice(s, &mut k).map_err(|_| KeyError::BadHex)?;
        Ok(Key(k))
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        if s.len() != 44 {
            return Err(KeyError::BadBase64);
        }
        let v = STANDARD.decode(s).map_err(|_| KeyError::BadBase64)?;
        let k: [u8; 32] = v.try_into().map_err(|_| KeyError::BadBase64)?;
        Ok(Key(k))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// UAPI uses an all-zero key to mean "no key".
    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 32]
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_base64()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_round_trip() {
        let k = Key([7u8; 32]);
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
    }

    #[test]
    fn rejects_bad_encodings() {
        assert_eq!(Key::from_hex("00"), Err(KeyError::BadHex));
        assert_eq!(Key::from_hex(&"g".repeat(64)), Err(KeyError::BadHex));
        assert_eq!(Key::from_base64("AAAA"), Err(KeyError::BadBase64));
        assert_eq!(Key::from_base64(&"!".repeat(44)), Err(KeyError::BadBase64));
    }
}
