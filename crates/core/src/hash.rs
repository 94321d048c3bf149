use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A sha256 over canonical bytes, shown as 64 lowercase hex digits. Used for
/// `spec_hash` and `lock_hash`: equal content always gives an equal hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a sha256 hash (64 hex digits)")]
pub struct ParseHashError(String);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 16 hex digits: short enough for a path that conda tools
    /// embed in scripts, long enough that collisions do not happen in practice.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl FromStr for ContentHash {
    type Err = ParseHashError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ParseHashError(text.escape_debug().to_string()));
        }
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| ParseHashError(text.escape_debug().to_string()))?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let hash = ContentHash::of(b"abc");
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash.to_hex().parse::<ContentHash>().unwrap(), hash);
        assert_eq!(hash.short(), "ba7816bf8f01cfea");
    }

    #[test]
    fn refuses_what_is_not_a_hash() {
        for text in [
            "",
            "abc",
            &"g".repeat(64),
            &"A".repeat(64),
            "../../etc/passwd",
        ] {
            assert!(text.parse::<ContentHash>().is_err(), "{text}");
        }
    }
}
