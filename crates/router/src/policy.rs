//! Server selection (sans-IO): available = fresh ∧ up ∧ active < capacity ∧ enough free
//! disk ∧ notifier healthy. Among the available, two candidates are drawn at random in
//! proportion to their `weight` and the less loaded (active / capacity) wins, ties to the
//! first ("power of two choices"): a stale view cannot herd every call onto one server,
//! light traffic splits by weight, heavy traffic evens out the load relative to capacity.
//! Servers of weight 0 are standby: drawn only when no weighted server is available.
//! A server whose replication to JetStream lags (more than [`LAGGING`] messages not yet
//! there: JetStream is away for it) is drawn only when no other is available, so new
//! messages go where they are safe on two hosts at once.

use boxless_core::{Rng, StatusBoard};

/// Most servers one router considers.
pub const MAX_SERVERS: usize = 256;

/// Messages not yet in JetStream past which a server counts as lagging (a healthy one
/// has at most the few deposits of the last second on the wire).
pub const LAGGING: u64 = 16;

/// Picks a server index for a new deposit, or None when none is available.
pub fn pick(board: &StatusBoard, now_ms: u64, ttl_ms: u64, rng: &mut Rng) -> Option<usize> {
    pick_where(board, now_ms, ttl_ms, rng, |_| true)
}

/// [`pick`] among the servers `allowed` admits (a proxy's failover: those not tried yet).
pub fn pick_where(
    board: &StatusBoard,
    now_ms: u64,
    ttl_ms: u64,
    rng: &mut Rng,
    allowed: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut avail = [0u16; MAX_SERVERS];
    let mut n = 0;
    let mut total = 0u64;
    let mut lagging = 0;
    for (i, s) in board.slots.iter().enumerate().take(MAX_SERVERS) {
        let v = s.view();
        if allowed(i) && v.available(now_ms, ttl_ms) {
            avail[n] = i as u16;
            n += 1;
            total += u64::from(s.weight);
            lagging += usize::from(lags(&v));
        }
    }
    // Some replicate and some lag: only those that replicate are drawn.
    if lagging > 0 && lagging < n {
        let mut kept = 0;
        total = 0;
        for k in 0..n {
            let i = avail[k] as usize;
            if !lags(&board.slots[i].view()) {
                avail[kept] = i as u16;
                kept += 1;
                total += u64::from(board.slots[i].weight);
            }
        }
        n = kept;
    }
    let avail = &avail[..n];
    // Only standby servers left: they share the calls evenly.
    let standby = total == 0;
    let weight = |i: usize| {
        if standby {
            1
        } else {
            u64::from(board.slots[i].weight)
        }
    };
    let total = if standby { n as u64 } else { total };
    match n {
        0 => None,
        1 => Some(avail[0] as usize),
        _ => {
            let a = draw(avail, &weight, total, None, rng);
            let rest = total - weight(a);
            if rest == 0 {
                return Some(a);
            }
            let b = draw(avail, &weight, rest, Some(a), rng);
            Some(if load(board, b) < load(board, a) {
                b
            } else {
                a
            })
        }
    }
}

fn lags(v: &boxless_core::StatusView) -> bool {
    v.unreplicated.is_some_and(|b| b > LAGGING)
}

/// One server drawn in proportion to `weight` (`total` = the sum over `avail` but `skip`).
fn draw(
    avail: &[u16],
    weight: &impl Fn(usize) -> u64,
    total: u64,
    skip: Option<usize>,
    rng: &mut Rng,
) -> usize {
    let mut r = rng.below(total);
    let mut last = avail[0] as usize;
    for &i in avail {
        let i = i as usize;
        if Some(i) == skip {
            continue;
        }
        let w = weight(i);
        if r < w {
            return i;
        }
        r -= w;
        last = i;
    }
    last
}

/// Most servers a 302 lists after the chosen one.
pub const MAX_ALTERNATES: usize = 3;

/// Other available servers a 302 offers after the chosen one, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Alternates {
    n: u8,
    idx: [u16; MAX_ALTERNATES],
}

impl Alternates {
    /// Board indices, best first.
    pub fn as_slice(&self) -> &[u16] {
        &self.idx[..self.n as usize]
    }
}

/// Up to `k` available servers other than `chosen`, weighted before standby, then the
/// least loaded first.
pub fn alternates(
    board: &StatusBoard,
    now_ms: u64,
    ttl_ms: u64,
    chosen: usize,
    k: usize,
) -> Alternates {
    let k = k.min(MAX_ALTERNATES);
    let mut out = Alternates::default();
    if k == 0 {
        return out;
    }
    let rank = |i: usize| (board.slots[i].weight == 0, load(board, i));
    let mut ranks = [(false, 0u64); MAX_ALTERNATES];
    for (i, s) in board.slots.iter().enumerate().take(MAX_SERVERS) {
        if i == chosen || !s.view().available(now_ms, ttl_ms) {
            continue;
        }
        let r = rank(i);
        // Insertion into a short sorted list.
        let n = out.n as usize;
        let mut at = n;
        while at > 0 && r < ranks[at - 1] {
            at -= 1;
        }
        if at >= k {
            continue;
        }
        let end = n.min(k - 1);
        for j in (at..end).rev() {
            out.idx[j + 1] = out.idx[j];
            ranks[j + 1] = ranks[j];
        }
        out.idx[at] = i as u16;
        ranks[at] = r;
        out.n = (n + 1).min(k) as u8;
    }
    out
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
    fn a_server_whose_replication_lags_gets_calls_only_when_no_other_can() {
        let b = board(3);
        for (s, behind) in b.slots.iter().zip([0, LAGGING + 1, 3]) {
            s.set_unreplicated(Some(behind));
        }
        let mut rng = Rng::seeded(9);
        let mut counts = [0u32; 3];
        for _ in 0..300 {
            counts[pick(&b, 5000, 3000, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0, "{counts:?}");
        assert!(counts[0] > 100 && counts[2] > 100, "{counts:?}");
        // The others full: the lagging one still takes calls (kept on its disk).
        for i in [0, 2] {
            let mut v = b.slots[i].view();
            v.active = v.capacity;
            b.slots[i].publish(v);
        }
        assert_eq!(pick(&b, 5000, 3000, &mut rng), Some(1));
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

    #[test]
    fn failover_picks_among_the_servers_not_tried() {
        let b = weighted(&[1, 1, 0]);
        let mut rng = Rng::seeded(5);
        for _ in 0..200 {
            let i = pick_where(&b, 5000, 3000, &mut rng, |i| i != 0).unwrap();
            assert_eq!(i, 1, "the weighted untried server before standby");
        }
        assert_eq!(
            pick_where(&b, 5000, 3000, &mut rng, |i| i == 2),
            Some(2),
            "standby when nothing else is left"
        );
        assert_eq!(pick_where(&b, 5000, 3000, &mut rng, |_| false), None);
    }

    #[test]
    fn alternates_are_the_next_best_available_servers() {
        let b = weighted(&[1, 1, 0, 1, 1]);
        for (i, active) in [(0, 5), (1, 9), (2, 0), (3, 2), (4, 7)] {
            for _ in 0..active {
                b.slots[i].call_started();
            }
        }
        let mut v = b.slots[4].view();
        v.state = ServerState::Draining;
        b.slots[4].publish(v);
        let alt = |chosen, k| alternates(&b, 5000, 3000, chosen, k).as_slice().to_vec();
        // Weighted by load (3, then 1), standby last, never the chosen or a draining one.
        assert_eq!(alt(0, 3), vec![3, 1, 2]);
        assert_eq!(alt(0, 1), vec![3]);
        assert_eq!(alt(3, 2), vec![0, 1]);
        assert_eq!(alt(0, 0), Vec::<u16>::new());
        assert_eq!(alt(0, 9), vec![3, 1, 2]);
    }

    fn weighted(weights: &[u32]) -> StatusBoard {
        let b = board(weights.len());
        StatusBoard::new(
            b.slots
                .into_iter()
                .zip(weights)
                .map(|(s, &w)| s.with_weight(w))
                .collect(),
        )
    }

    #[test]
    fn light_traffic_splits_by_weight() {
        // Calls end before the next one comes: every server idle, weights decide.
        let b = weighted(&[3, 1, 0]);
        let mut rng = Rng::seeded(7);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[pick(&b, 5000, 3000, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0, "standby chosen while weighted servers are up");
        let share = counts[0] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn heavy_traffic_evens_out_load_whatever_the_weights() {
        let b = weighted(&[5, 1]);
        let mut rng = Rng::seeded(9);
        for _ in 0..100 {
            let i = pick(&b, 5000, 3000, &mut rng).unwrap();
            b.slots[i].call_started();
        }
        let (a, c) = (b.slots[0].view().active, b.slots[1].view().active);
        assert!(a + c == 100 && a.abs_diff(c) <= 20, "{a} vs {c}");
    }

    #[test]
    fn standby_servers_take_calls_only_when_no_weighted_one_is_available() {
        let b = weighted(&[2, 0, 0]);
        let mut v = b.slots[0].view();
        v.state = ServerState::Draining;
        b.slots[0].publish(v);
        let mut rng = Rng::seeded(1);
        let mut counts = [0u32; 3];
        for _ in 0..1000 {
            counts[pick(&b, 5000, 3000, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!(counts[1] > 400 && counts[2] > 400, "{counts:?}");
    }
}
