//! When each of many machines wants to run next, earliest first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// One wake-up per machine, keyed by the holder's id for it. Arming a machine replaces its
/// earlier wake-up; the heap's outdated entries are skipped when they surface and dropped
/// wholesale when they outnumber the live ones, so its size stays within twice the number
/// of machines (plus a constant).
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    armed: HashMap<K, Instant>,
}

impl<K> Default for TimerQueue<K> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            armed: HashMap::new(),
        }
    }
}

impl<K: Copy + Ord + Hash> TimerQueue<K> {
    /// Sets when `k` runs next (`None`: not at all), replacing what was set before.
    pub fn arm(&mut self, k: K, at: Option<Instant>) {
        match at {
            None => {
                self.armed.remove(&k);
            }
            Some(at) => {
                if self.armed.insert(k, at) == Some(at) {
                    return;
                }
                self.heap.push(Reverse((at, k)));
            }
        }
        if self.heap.len() > 2 * self.armed.len() + 64 {
            self.heap = self
                .armed
                .iter()
                .map(|(k, at)| Reverse((*at, *k)))
                .collect();
        }
    }

    /// The earliest wake-up.
    pub fn earliest(&mut self) -> Option<Instant> {
        self.skip_outdated();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A machine due at `now`, disarmed: the caller runs it and arms it again.
    pub fn pop(&mut self, now: Instant) -> Option<K> {
        self.skip_outdated();
        let Reverse((at, k)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.armed.remove(&k);
        Some(k)
    }

    /// Machines armed.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// True when none is armed.
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    fn skip_outdated(&mut self) {
        while let Some(Reverse((at, k))) = self.heap.peek() {
            if self.armed.get(k) == Some(at) {
                return;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_rearming_replaces_and_disarming_forgets() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut q = TimerQueue::default();
        q.arm(1u32, Some(t0 + s(3)));
        q.arm(2, Some(t0 + s(1)));
        q.arm(3, Some(t0 + s(2)));
        q.arm(2, Some(t0 + s(5)));
        q.arm(3, None);
        assert_eq!(q.earliest(), Some(t0 + s(3)));
        assert_eq!(q.pop(t0 + s(2)), None, "nothing due yet");
        assert_eq!(q.pop(t0 + s(9)), Some(1));
        assert_eq!(q.pop(t0 + s(9)), Some(2));
        assert_eq!(
            q.pop(t0 + s(9)),
            None,
            "3 was disarmed, 2's first time outdated"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn outdated_entries_are_bounded() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        for i in 0..10_000u32 {
            q.arm(i % 10, Some(t0 + Duration::from_millis(u64::from(i))));
        }
        assert_eq!(q.len(), 10);
        assert!(q.heap.len() <= 2 * 10 + 64 + 1, "{}", q.heap.len());
        let mut order = Vec::new();
        while let Some(k) = q.pop(t0 + Duration::from_secs(60)) {
            order.push(k);
        }
        assert_eq!(
            order,
            (0..10).collect::<Vec<_>>(),
            "each once, at its last time"
        );
    }
}
