//! Secrets at rest: endpoint secrets, v1a private keys and mTLS client keys are stored sealed
//! with AES-256-GCM under a server key that lives in a file (webhooks.key_file), never in a
//! table, a setting or a log line. A sealed value names the key that sealed it, so a key file
//! may hold several keys (a rotation in progress, a key brought back from a backup): the last
//! one seals, every one opens.
//!
//! Sealed form: `whenc1:<key id>:<base64url(nonce || ciphertext || tag)>`. The prefix and the
//! key id are the associated data: a value cannot be moved to another key id by editing it.
//! Nonces are 96 random bits; a cluster seals a few values per endpoint, far from the 2^32
//! seals per key at which random nonces would need counting.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

pub const PREFIX: &str = "whenc1:";

/// One key of the key file.
pub struct Key {
    pub id: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key's bytes
        write!(f, "Key({})", self.id)
    }
}

/// The keys of a key file, in file order: the last one seals.
#[derive(Debug, Default)]
pub struct Keyring {
    pub keys: Vec<Key>,
}

/// Why a sealed value does not open: each names what an operator has to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key the key file does not hold.
    UnknownKey(String),
    /// The key id is there but the value does not open under it (a different key with the
    /// same id, or a damaged value).
    Damaged(String),
    /// Not in the sealed form at all, though it starts like one.
    Malformed,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::UnknownKey(id) => write!(
                f,
                "it is sealed under key \"{id}\", which webhooks.key_file does not hold"
            ),
            OpenError::Damaged(id) => write!(
                f,
                "it does not open under key \"{id}\" of webhooks.key_file (another key with that id, or a damaged value)"
            ),
            OpenError::Malformed => write!(f, "it is not a sealed value (whenc1:<key>:<data>)"),
        }
    }
}

/// A key id as the file writes it: 1-32 letters, digits, _ or -.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether a stored value is sealed (values written before 0.4.0, or restored from a dump of
/// one, are plain until resealed).
pub fn is_sealed(v: &str) -> bool {
    v.starts_with(PREFIX)
}

/// The id of the key a sealed value names.
pub fn key_id(v: &str) -> Option<&str> {
    v.strip_prefix(PREFIX)?.split(':').next()
}

/// One line of a key file: `<id> <base64 of 32 bytes>`.
pub fn key_line(id: &str, bytes: &[u8; 32]) -> String {
    format!(
        "{id} {}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A fresh key id from random bytes: `k` and 12 hex digits (ids never come back, so a key
/// recreated after a loss cannot be taken for the lost one).
pub fn new_id(random: &[u8; 6]) -> String {
    format!("k{}", hex::encode(random))
}

impl Keyring {
    /// Parses a key file: one key per line, `#` comments and blank lines ignored. Errors name
    /// the line (never its content).
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(b64), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!(
                    "line {} is not \"<key id> <base64 of 32 bytes>\"",
                    n + 1
                ));
            };
            if !valid_id(id) {
                return Err(format!(
                    "line {}: the key id is not 1-32 letters, digits, _ or -",
                    n + 1
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| format!("line {}: the key is not base64", n + 1))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "line {}: the key is {} bytes, AES-256 needs 32",
                    n + 1,
                    bytes.len()
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("line {}: key id \"{id}\" appears twice", n + 1));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| format!("line {}: the key is not usable", n + 1))?;
            keys.push(Key {
                id: id.to_string(),
                key: LessSafeKey::new(unbound),
            });
        }
        Ok(Keyring { keys })
    }

    /// The key that seals: the file's last.
    pub fn current(&self) -> Option<&Key> {
        self.keys.last()
    }

    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Seals `plain` under the current key with the given nonce (random, from the caller).
    pub fn seal(&self, plain: &str, nonce: [u8; NONCE_LEN]) -> Option<String> {
        let key = self.current()?;
        let head = format!("{PREFIX}{}:", key.id);
        let mut buf = plain.as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(head.as_bytes()),
                &mut buf,
            )
            .ok()?;
        let mut data = nonce.to_vec();
        data.extend_from_slice(&buf);
        Some(format!("{head}{}", URL_SAFE_NO_PAD.encode(data)))
    }

    /// Opens a sealed value; a plain one comes back as it is.
    pub fn open(&self, v: &str) -> Result<String, OpenError> {
        let Some(rest) = v.strip_prefix(PREFIX) else {
            return Ok(v.to_string());
        };
        let (id, b64) = rest.split_once(':').ok_or(OpenError::Malformed)?;
        let key = self
            .get(id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_string()))?;
        let data = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| OpenError::Malformed)?;
        if data.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError::Malformed);
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let head = format!("{PREFIX}{id}:");
        let mut buf = sealed.to_vec();
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(head.as_bytes()),
                &mut buf,
            )
            .map_err(|_| OpenError::Damaged(id.to_string()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| OpenError::Damaged(id.to_string()))
    }

    /// Whether a stored value should be sealed again under the current key: plain, or sealed
    /// under an older key that this file still holds (one it lacks cannot be opened, so it
    /// waits for its key).
    pub fn needs_reseal(&self, v: &str) -> bool {
        let Some(current) = self.current() else {
            return false;
        };
        match key_id(v) {
            None => true,
            Some(id) => id != current.id && self.get(id).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(ids: &[(&str, u8)]) -> Keyring {
        let text: String = ids.iter().map(|(id, b)| key_line(id, &[*b; 32])).collect();
        Keyring::parse(&text).unwrap()
    }

    #[test]
    fn seals_and_opens() {
        let r = ring_of(&[("k1", 1)]);
        let s = r.seal("whsec_abc", [7; 12]).unwrap();
        assert!(s.starts_with("whenc1:k1:"));
        assert!(!s.contains("whsec"));
        assert_eq!(r.open(&s).unwrap(), "whsec_abc");
        // plain values pass through
        assert_eq!(r.open("whsec_plain").unwrap(), "whsec_plain");
    }

    #[test]
    fn every_key_opens_the_last_seals() {
        let old = ring_of(&[("old", 1)]);
        let s_old = old.seal("a", [1; 12]).unwrap();
        let both = ring_of(&[("old", 1), ("new", 2)]);
        assert_eq!(both.open(&s_old).unwrap(), "a");
        let s_new = both.seal("b", [2; 12]).unwrap();
        assert_eq!(key_id(&s_new), Some("new"));
        assert!(both.needs_reseal(&s_old));
        assert!(!both.needs_reseal(&s_new));
        assert!(both.needs_reseal("whsec_plain"));
        assert_eq!(old.open(&s_new), Err(OpenError::UnknownKey("new".into())));
        // a value under a key the file lacks is left for its key to come back
        assert!(!old.needs_reseal(&s_new));
    }

    #[test]
    fn a_wrong_key_or_an_edited_value_does_not_open() {
        let r = ring_of(&[("k1", 1)]);
        let s = r.seal("secret", [3; 12]).unwrap();
        let other = ring_of(&[("k1", 9)]);
        assert_eq!(other.open(&s), Err(OpenError::Damaged("k1".into())));
        // moved to another key id by editing: the id is authenticated
        let r2 = ring_of(&[("k1", 1), ("k2", 1)]);
        let moved = s.replacen("whenc1:k1:", "whenc1:k2:", 1);
        assert_eq!(r2.open(&moved), Err(OpenError::Damaged("k2".into())));
        let mut flipped = s.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(r.open(&String::from_utf8(flipped).unwrap()).is_err());
        assert_eq!(r.open("whenc1:k1"), Err(OpenError::Malformed));
        assert_eq!(r.open("whenc1:k1:!!"), Err(OpenError::Malformed));
    }

    #[test]
    fn parse_names_the_line_never_the_key() {
        let good = key_line("k1", &[5; 32]);
        assert!(Keyring::parse(&format!("# comment\n\n{good}")).is_ok());
        let e = Keyring::parse("k1 c2hvcnQ=\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("32"), "{e}");
        assert!(!e.contains("c2hvcnQ"));
        let e = Keyring::parse(&format!("{good}{good}")).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert!(Keyring::parse("bad id here\n").is_err());
        assert!(Keyring::parse("k@ AAAA\n").is_err());
        assert!(Keyring::parse("").unwrap().current().is_none());
        assert!(format!("{:?}", ring_of(&[("k1", 1)])).contains("k1"));
        assert!(!format!("{:?}", ring_of(&[("k1", 1)])).contains("AQEB"));
    }

    #[test]
    fn ids() {
        assert_eq!(new_id(&[0xab; 6]), "kabababababab");
        assert!(valid_id(&new_id(&[1; 6])));
        assert!(!valid_id(""));
        assert!(!valid_id(&"k".repeat(33)));
    }
}
