//! Clock, randomness and identifiers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the UNIX epoch (wall clock; drivers only).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A small seedable generator (SplitMix64): fast, and enough for tags, branches and the
/// router's random choices. Secrets (access codes) use [`Rng::from_entropy`] seeds.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator that replays exactly from `seed`.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from the OS (`/dev/urandom`), falling back to time and pid.
    pub fn from_entropy() -> Rng {
        let mut b = [0u8; 8];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .is_ok();
        let seed = if ok {
            u64::from_le_bytes(b)
        } else {
            now_ms() ^ ((std::process::id() as u64) << 32)
        };
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Formats ms since the epoch as RFC 3339 UTC (`2026-11-26T12:05:00.123Z`).
pub fn rfc3339(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000, 0);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// FNV-1a (64-bit) of `bytes`, from `basis` ([`FNV_BASIS`], or that mixed with a key): a
/// stable, fast spread of ids and tags over buckets. Not a defence against someone who
/// picks the bytes to collide; key it where a stranger chooses them.
pub fn fnv1a(basis: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(basis, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a's 64-bit offset basis.
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// A byte of a server or message id, and of base64url: a letter, a digit, `-` or `_`
/// (safe in a URL path, a file name and an SMS).
pub fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `2026-11-30 14:05 UTC` (or `UTC+01:00`): a time as a person reads it, at the
/// configured offset from UTC.
pub fn local_time(ms: u64, utc_offset_min: i32) -> String {
    let (y, mo, d, h, mi, _) = civil(ms / 1000, utc_offset_min);
    let zone = if utc_offset_min == 0 {
        "UTC".to_string()
    } else {
        let sign = if utc_offset_min < 0 { '-' } else { '+' };
        let o = utc_offset_min.unsigned_abs();
        format!("UTC{sign}{:02}:{:02}", o / 60, o % 60)
    };
    format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02} {zone}")
}

/// (year, month, day, hour, minute, second) of `secs` since the epoch shifted by `offset_min`.
pub fn civil(secs: u64, offset_min: i32) -> (i64, u32, u32, u32, u32, u32) {
    let t = secs as i64 + offset_min as i64 * 60;
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_gives_the_published_values() {
        assert_eq!(fnv1a(FNV_BASIS, []), FNV_BASIS);
        assert_eq!(fnv1a(FNV_BASIS, *b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_BASIS, *b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_694_700_123), "2026-11-26T12:05:00.123Z");
        assert_eq!(civil(951_782_400, 0), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(0, -60).3, 23);
    }

    #[test]
    fn rng_replays_and_spreads() {
        let mut a = Rng::seeded(7);
        let mut b = Rng::seeded(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[a.below(4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
