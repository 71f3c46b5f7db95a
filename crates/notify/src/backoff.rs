//! Retry policy of the outbox (sans-IO): exponential backoff with jitter, capped.

use boxless_core::Rng;

/// Delay before attempt `n + 1` after `n` failures: `initial * 2^(n-1)`, at most `max`,
/// scaled by a random factor in [0.8, 1.2) so that many SMS do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    rng: Rng,
}

impl Backoff {
    /// A policy with the given bounds.
    pub fn new(initial_ms: u64, max_ms: u64, rng: Rng) -> Backoff {
        Backoff {
            initial_ms: initial_ms.max(1),
            max_ms: max_ms.max(initial_ms),
            rng,
        }
    }

    /// Milliseconds to wait after the `failures`-th failure (1-based).
    pub fn delay_ms(&mut self, failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(32);
        let base = self.initial_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let jitter = 800 + self.rng.below(400);
        (base * jitter / 1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_with_bounded_jitter() {
        let mut b = Backoff::new(500, 8000, Rng::seeded(1));
        let d: Vec<u64> = (1..=8).map(|n| b.delay_ms(n)).collect();
        for (n, &v) in d.iter().enumerate() {
            let base = (500u64 << n).min(8000);
            assert!(v >= base * 8 / 10 && v < base * 12 / 10, "{n}: {v}");
        }
        assert!(b.delay_ms(u32::MAX) < 9600);
    }
}
