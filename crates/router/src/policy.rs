//! Server selection (sans-IO): available = fresh ∧ up ∧ active < capacity ∧ enough free
//! disk ∧ notifier healthy; among the available, the less loaded of two random choices
//! ("power of two choices"), so that a stale view cannot herd every call onto one server.

use boxless_core::{Rng, StatusBoard};

/// Most servers one router considers.
pub const MAX_SERVERS: usize = 256;

/// Picks a server index for a new deposit, or None when none is available.
pub fn pick(board: &StatusBoard, now_ms: u64, ttl_ms: u64, rng: &mut Rng) -> Option<usize> {
    let mut avail = [0u16; MAX_SERVERS];
    let mut n = 0;
    for (i, s) in board.slots.iter().enumerate().take(MAX_SERVERS) {
        if s.view().available(now_ms, ttl_ms) {
            avail[n] = i as u16;
            n += 1;
        }
    }
    match n {
        0 => None,
        1 => Some(avail[0] as usize),
        _ => {
            let a = avail[rng.below(n as u64) as usize] as usize;
            let mut b = avail[rng.below(n as u64 - 1) as usize] as usize;
            if b == a {
                b = avail[n - 1] as usize;
            }
            Some(if load(board, b) < load(board, a) {
                b
            } else {
                a
            })
        }
    }
}

/// Load as a fraction of capacity, in parts per million (integer maths, no float).
fn load(board: &StatusBoard, i: usize) -> u64 {
    let v = board.slots[i].view();
    v.active as u64 * 1_000_000 / v.capacity.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::{LinkPool, ServerSlot, ServerState, StatusView};

    fn board(n: usize) -> StatusBoard {
        StatusBoard::new(
            (0..n)
                .map(|i| {
                    let s = ServerSlot::new(
                        &format!("ms{i}"),
                        ([127, 0, 0, 1], 5070 + i as u16).into(),
                        LinkPool::default(),
                        100,
                    );
                    s.publish(StatusView::up(100, 4000));
                    s
                })
                .collect(),
        )
    }

    #[test]
    fn only_available_servers_are_chosen() {
        let b = board(4);
        let mut v = b.slots[0].view();
        v.state = ServerState::Draining;
        b.slots[0].publish(v);
        v = b.slots[1].view();
        v.last_update_ms = 1000;
        b.slots[1].publish(v);
        v = b.slots[2].view();
        v.notifier_ok = false;
        b.slots[2].publish(v);
        let mut rng = Rng::seeded(3);
        for _ in 0..100 {
            assert_eq!(pick(&b, 5000, 3000, &mut rng), Some(3));
        }
        v = b.slots[3].view();
        v.active = 100;
        b.slots[3].publish(v);
        assert_eq!(pick(&b, 5000, 3000, &mut rng), None);
        // Stale beyond the TTL: down.
        assert_eq!(pick(&board(2), 10_000, 3000, &mut rng), None);
    }

    #[test]
    fn load_spreads_and_prefers_the_less_loaded() {
        let b = board(3);
        for s in &b.slots {
            let mut v = s.view();
            v.capacity = 100_000;
            s.publish(v);
        }
        let mut rng = Rng::seeded(42);
        let mut counts = [0u32; 3];
        for _ in 0..3000 {
            let i = pick(&b, 5000, 3000, &mut rng).unwrap();
            counts[i] += 1;
            b.slots[i].call_started();
        }
        // Calls never end here, so two choices keep the three within a few calls.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 10, "{counts:?}");
    }
}
