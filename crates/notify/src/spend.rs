//! What an SMS may cost: the operator's spend limits, applied when a job is due.
//!
//! A notification to a number outside `sms.allowed_prefixes` is never sent (SMS pumping
//! makes its money on foreign and premium ranges): it is kept as `blocked`, counted and
//! logged, and the message it belongs to is stored and retrievable as usual.

use boxless_core::PhoneNumber;

/// The spend limits of one notifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendPolicy {
    /// E.164 prefixes (`+1`, `+4420`); empty: any destination.
    pub allowed_prefixes: Vec<String>,
}

impl SpendPolicy {
    /// True when an SMS may go to `n`.
    pub fn allows(&self, n: PhoneNumber) -> bool {
        if self.allowed_prefixes.is_empty() {
            return true;
        }
        let n = n.to_string();
        self.allowed_prefixes
            .iter()
            .any(|p| n.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_allow_only_their_ranges() {
        let n = |s: &str| PhoneNumber::parse_e164(s).unwrap();
        let any = SpendPolicy::default();
        assert!(any.allows(n("+23480000001")));
        let p = SpendPolicy {
            allowed_prefixes: vec!["+1".into(), "+4420".into()],
        };
        assert!(p.allows(n("+15551230002")));
        assert!(p.allows(n("+442079460000")));
        assert!(!p.allows(n("+447700900000")), "+44 7… is not +44 20…");
        assert!(!p.allows(n("+23480000001")));
        assert!(!p.allows(n("+37060000000")));
    }
}
