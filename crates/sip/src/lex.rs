//! The lexing every SIP parser here shares: byte sets built at compile time, splitting on
//! an ASCII byte, RFC 3261 `LWS` and `token`, small decimal numbers. It sits below the
//! message parser ([`crate::parse`]) and the header views ([`crate::hdr`]), which both use
//! it.

/// A set of bytes as a lookup table, built at compile time.
pub(crate) struct ByteSet([bool; 256]);

impl ByteSet {
    /// The set of `chars`, plus ASCII letters and digits when `alnum`.
    pub(crate) const fn new(chars: &[u8], alnum: bool) -> ByteSet {
        let mut t = [false; 256];
        let mut i = 0;
        while i < chars.len() {
            t[chars[i] as usize] = true;
            i += 1;
        }
        if alnum {
            let mut c = 0;
            while c < 256 {
                let b = c as u8;
                if b.is_ascii_alphanumeric() {
                    t[c] = true;
                }
                c += 1;
            }
        }
        ByteSet(t)
    }

    #[inline]
    pub(crate) fn has(&self, b: u8) -> bool {
        self.0[b as usize]
    }
}

/// Index of the first byte of `s` in `set`.
#[inline]
pub(crate) fn find_byte(s: &str, set: &ByteSet) -> Option<usize> {
    s.bytes().position(|b| set.has(b))
}

/// Index of the first `b` (ASCII) in `s`: a plain byte loop, cheaper than a char pattern
/// on the short strings of header values.
#[inline]
pub(crate) fn find1(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// `s` split around its first `b` (ASCII), without it.
#[inline]
pub(crate) fn split1(s: &str, b: u8) -> Option<(&str, &str)> {
    // `b` is ASCII, so both sides are on char boundaries.
    find1(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

/// `s` split around its last `b` (ASCII), without it.
#[inline]
pub(crate) fn rsplit1(s: &str, b: u8) -> Option<(&str, &str)> {
    s.bytes()
        .rposition(|c| c == b)
        .map(|i| (&s[..i], &s[i + 1..]))
}

/// Trims SP, HT, CR and LF from both ends.
#[inline]
pub(crate) fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let lws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = b.iter().position(|c| !lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !lws(c)).map_or(start, |i| i + 1);
    // Both ends sit next to ASCII bytes, hence on char boundaries.
    &s[start..end.max(start)]
}

const TOKEN: &ByteSet = &ByteSet::new(b"-.!%*_+`'~", true);

/// RFC 3261 `token` characters.
#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    TOKEN.has(b)
}

/// Parses a decimal number of at most `max`; leading zeros allowed, nothing else.
pub(crate) fn parse_small_uint(s: &str, max: u64) -> Option<u64> {
    let s = trim_lws(s);
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (v <= max).then_some(v)
}
