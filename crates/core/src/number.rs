//! E.164 phone numbers, national-number completion and link-number pools.

use std::fmt;

/// An E.164 number (`+` and 1 to 15 digits, no leading zero). Once built, always valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(u64);

impl PhoneNumber {
    /// Parses the canonical form `+digits`.
    pub fn parse_e164(s: &str) -> Option<PhoneNumber> {
        let digits = s.strip_prefix('+')?;
        Self::from_digits(digits)
    }

    fn from_digits(d: &str) -> Option<PhoneNumber> {
        if d.is_empty()
            || d.len() > 15
            || d.starts_with('0')
            || !d.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        d.parse().ok().map(PhoneNumber)
    }

    /// The digits as an integer (no `+`).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The digits after `+`.
    pub fn digits(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// Completes dialled forms into E.164 with the operator's country code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbering {
    country_code: String,
}

impl Numbering {
    /// `country_code` is 1 to 3 digits without `+`.
    pub fn new(country_code: &str) -> Option<Numbering> {
        let ok = (1..=3).contains(&country_code.len())
            && !country_code.starts_with('0')
            && country_code.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| Numbering {
            country_code: country_code.to_string(),
        })
    }

    /// Normalises a SIP user part or tel: number: visual separators dropped, `+` or `00`
    /// international, otherwise national (one trunk `0` dropped) completed with the country code.
    /// Returns None for anything that is not a phone number (`anonymous`, `alice`, ...).
    pub fn normalize(&self, user: &str) -> Option<PhoneNumber> {
        // User parts may carry parameters (`;phone-context=...`, `;isub=...`).
        let user = user.split(';').next().unwrap_or("");
        let mut buf = [0u8; 24];
        let mut n = 0;
        let mut plus = false;
        for (i, b) in user.bytes().enumerate() {
            match b {
                b'+' if i == 0 => plus = true,
                b'0'..=b'9' => {
                    if n == buf.len() {
                        return None;
                    }
                    buf[n] = b;
                    n += 1;
                }
                b'-' | b'.' | b'(' | b')' | b' ' => {}
                _ => return None,
            }
        }
        // Only ASCII digits were stored.
        let digits = std::str::from_utf8(&buf[..n]).ok()?;
        if n < 3 {
            return None;
        }
        if plus {
            return PhoneNumber::from_digits(digits);
        }
        if let Some(intl) = digits.strip_prefix("00") {
            return PhoneNumber::from_digits(intl);
        }
        let national = digits.strip_prefix('0').unwrap_or(digits);
        let mut full = String::with_capacity(self.country_code.len() + national.len());
        full.push_str(&self.country_code);
        full.push_str(national);
        PhoneNumber::from_digits(&full)
    }
}

/// A server's pool of message link numbers: ranges `+first-+last` or single numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkPool {
    ranges: Vec<(u64, u64)>,
}

impl LinkPool {
    /// Parses entries such as `"+18005550100-+18005550149"` or `"+18005550199"`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<LinkPool, String> {
        let mut ranges = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            let (a, b) = match e.split_once("-+") {
                Some((a, b)) => (a, format!("+{b}")),
                None => (e, e.to_string()),
            };
            let first = PhoneNumber::parse_e164(a)
                .ok_or_else(|| format!("`{e}` is not +E.164 or +FIRST-+LAST"))?;
            let last = PhoneNumber::parse_e164(&b)
                .ok_or_else(|| format!("`{e}` is not +E.164 or +FIRST-+LAST"))?;
            if last < first {
                return Err(format!("`{e}`: the range ends before it starts"));
            }
            if last.0 - first.0 >= 1_000_000 {
                return Err(format!("`{e}`: at most 1000000 numbers per range"));
            }
            ranges.push((first.0, last.0));
        }
        ranges.sort_unstable();
        if ranges.windows(2).any(|w| w[1].0 <= w[0].1) {
            return Err("ranges overlap each other".into());
        }
        Ok(LinkPool { ranges })
    }

    /// True if `n` belongs to this pool.
    pub fn contains(&self, n: PhoneNumber) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&n.0))
    }

    /// True if any number belongs to both pools.
    pub fn overlaps(&self, other: &LinkPool) -> bool {
        self.ranges
            .iter()
            .any(|&(a, b)| other.ranges.iter().any(|&(c, d)| a <= d && c <= b))
    }

    /// Every number, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = PhoneNumber> + '_ {
        self.ranges
            .iter()
            .flat_map(|&(a, b)| (a..=b).map(PhoneNumber))
    }

    /// How many numbers the pool holds.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(a, b)| b - a + 1).sum()
    }

    /// True when the pool holds no number.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The pool in its configuration form.
    pub fn to_strings(&self) -> Vec<String> {
        self.ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    format!("+{a}")
                } else {
                    format!("+{a}-+{b}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_and_international_forms() {
        let n = Numbering::new("1").unwrap();
        let want = PhoneNumber::parse_e164("+15551230002").unwrap();
        for s in [
            "5551230002",
            "+15551230002",
            "0015551230002",
            "+1-555-123-0002",
            "(555) 123.0002",
            "+15551230002;npdi",
        ] {
            assert_eq!(n.normalize(s), Some(want), "{s}");
        }
        let de = Numbering::new("49").unwrap();
        assert_eq!(
            de.normalize("030123456").unwrap().to_string(),
            "+4930123456"
        );
        for s in [
            "anonymous",
            "vivekg",
            "",
            "+",
            "12",
            "+0123",
            "+1234567890123456",
        ] {
            assert_eq!(n.normalize(s), None, "{s}");
        }
    }

    #[test]
    fn pools() {
        let p = LinkPool::parse(&["+18005550100-+18005550149", "+18005550199"]).unwrap();
        assert_eq!(p.len(), 51);
        assert!(p.contains(PhoneNumber::parse_e164("+18005550149").unwrap()));
        assert!(!p.contains(PhoneNumber::parse_e164("+18005550150").unwrap()));
        assert_eq!(p.iter().next().unwrap().to_string(), "+18005550100");
        let q = LinkPool::parse(&["+18005550140-+18005550160"]).unwrap();
        assert!(p.overlaps(&q));
        assert!(LinkPool::parse(&["+18005550149-+18005550100"]).is_err());
        assert!(LinkPool::parse(&["1800"]).is_err());
        assert_eq!(
            p.to_strings(),
            ["+18005550100-+18005550149", "+18005550199"]
        );
    }
}
