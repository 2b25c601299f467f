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

/// The next id of this backend: a fresh random ULID when the millisecond moved on, else the
/// previous one plus one, so ids of one backend sort in the order they were made (ULID's
/// monotonic mode). A clock that steps back keeps the last millisecond.
pub fn next_monotonic(last: Option<(u64, u128)>, now_ms: u64, rand: [u8; 10]) -> (u64, u128) {
    let fresh = rand.iter().fold(0u128, |v, b| (v << 8) | *b as u128);
    match last {
        Some((ms, r)) if ms >= now_ms && r < (1u128 << 80) - 1 => (ms, r + 1),
        Some((ms, _)) if ms >= now_ms => (ms + 1, fresh),
        _ => (now_ms, fresh),
    }
}

fn to_bytes(r: u128) -> [u8; 10] {
    let mut out = [0u8; 10];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (r >> (72 - 8 * i)) as u8;
    }
    out
}

thread_local! {
    static LAST: std::cell::Cell<Option<(u64, u128)>> = const { std::cell::Cell::new(None) };
}

pub fn prefixed(prefix: &str) -> Result<String, String> {
    let now = now_ms();
    let (ms, r) = LAST.with(|l| -> Result<(u64, u128), String> {
        let last = l.get();
        // Within the last id's millisecond the next id is the last plus one: fresh randomness
        // (a system call) only when the millisecond moves on.
        let rand = match last {
            Some((ms, r)) if ms >= now && r < (1u128 << 80) - 1 => [0u8; 10],
            _ => random_bytes::<10>()?,
        };
        let next = next_monotonic(last, now, rand);
        l.set(Some(next));
        Ok(next)
    })?;
    Ok(format!("{prefix}{}", ulid(ms, to_bytes(r))))
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
    fn ids_of_one_backend_increase_within_a_millisecond() {
        let a = next_monotonic(None, 5, [1; 10]);
        let b = next_monotonic(Some(a), 5, [0; 10]);
        assert!(b > a && b.0 == 5);
        assert!(ulid(b.0, to_bytes(b.1)) > ulid(a.0, to_bytes(a.1)));
        // the random part is exhausted: borrow the next millisecond
        let c = next_monotonic(Some((5, (1u128 << 80) - 1)), 5, [0; 10]);
        assert_eq!(c.0, 6);
        // the clock stepped back: still increasing
        let d = next_monotonic(Some(b), 3, [0; 10]);
        assert!(d > b);
        let ids: Vec<String> = (0..1000).map(|_| prefixed("evt_").unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn secrets_decode_to_32_bytes() {
        let s = new_secret().unwrap();
        assert_eq!(crate::signing::secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, new_secret().unwrap());
    }
}
