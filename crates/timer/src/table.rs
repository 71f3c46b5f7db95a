//! A fixed table of named deadlines inside one sans-IO machine: the machine names its timers
//! with an enum, the table answers "what is next" and "did this one fire".

use std::marker::PhantomData;
use std::time::Instant;

/// Deadlines by name; `K` is the machine's timer enum (`Into<usize>`, below `N`).
#[derive(Debug, Clone)]
pub struct TimerTable<K, const N: usize> {
    at: [Option<Instant>; N],
    _k: PhantomData<fn(K)>,
}

impl<K: Copy + Into<usize>, const N: usize> Default for TimerTable<K, N> {
    fn default() -> Self {
        TimerTable {
            at: [None; N],
            _k: PhantomData,
        }
    }
}

impl<K: Copy + Into<usize>, const N: usize> TimerTable<K, N> {
    /// Arms `k` for `at` (replacing an earlier deadline).
    pub fn set(&mut self, k: K, at: Instant) {
        self.at[k.into()] = Some(at);
    }

    /// Disarms `k`.
    pub fn clear(&mut self, k: K) {
        self.at[k.into()] = None;
    }

    /// When `k` fires, if armed.
    pub fn get(&self, k: K) -> Option<Instant> {
        self.at[k.into()]
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// True (and disarmed) when `k` is due at `now`.
    pub fn fired(&mut self, k: K, now: Instant) -> bool {
        let slot = &mut self.at[k.into()];
        if slot.is_some_and(|t| now >= t) {
            *slot = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Clone, Copy)]
    enum T {
        A,
        B,
    }
    impl From<T> for usize {
        fn from(t: T) -> usize {
            t as usize
        }
    }

    #[test]
    fn next_is_the_earliest_and_fired_disarms() {
        let t0 = Instant::now();
        let mut t: TimerTable<T, 2> = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(T::A, t0 + Duration::from_secs(2));
        t.set(T::B, t0 + Duration::from_secs(1));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert!(!t.fired(T::A, t0 + Duration::from_secs(1)));
        assert!(t.fired(T::B, t0 + Duration::from_secs(1)));
        assert!(!t.fired(T::B, t0 + Duration::from_secs(5)), "fires once");
        assert_eq!(t.get(T::A), Some(t0 + Duration::from_secs(2)));
        t.clear(T::A);
        assert_eq!(t.next(), None);
    }
}
