//! Identifiers and secrets. Event ids are ULIDs (48-bit milliseconds + 80 random bits in
//! Crockford base32) so `ORDER BY id` is publish order to the millisecond.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| format!("the system random source failed: {e}"))?;
    Ok(buf)
}

/// A 26-character ULID for the given time and randomness.
pub fn ulid(unix_ms: u64, rand: [u8; 10]) -> String {
    let mut v: u128 = (unix_ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in rand.iter().enumerate() {
        v |= (*b as u128) << (72 - 8 * i);
    }
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as i32;
        let idx = if shift >= 0 {
            (v >> shift) & 0x1F
        } else {
            (v << -shift) & 0x1F
        };
        *slot = CROCKFORD[idx as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn prefixed(prefix: &str) -> Result<String, String> {
    Ok(format!("{prefix}{}", ulid(now_ms(), random_bytes::<10>()?)))
}

/// `whsec_` + base64 of 32 bytes from the operating system's CSPRNG.
pub fn new_secret() -> Result<String, String> {
    Ok(format!("whsec_{}", B64.encode(random_bytes::<32>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_sort_by_time_and_are_26_chars() {
        let a = ulid(1_700_000_000_000, [0xFF; 10]);
        let b = ulid(1_700_000_000_001, [0; 10]);
        assert_eq!(a.len(), 26);
        assert!(a < b, "{a} < {b}");
        assert_eq!(ulid(0, [0; 10]), "00000000000000000000000000");
        assert_eq!(
            ulid(0xFFFF_FFFF_FFFF, [0xFF; 10]),
            "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
        );
    }

    #[test]
    fn secrets_decode_to_32_bytes() {
        let s = new_secret().unwrap();
        assert_eq!(crate::signing::secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret().unwrap());
    }
}
