//! Liveness faster than the status TTL: the router sends each server a SIP OPTIONS every
//! `interval` and marks it down after `down_after` failed probes in a row, up again after
//! `up_after` good ones (hysteresis, as Kamailio's dispatcher does). Sans-IO: the driver
//! sends what [`Prober::poll_probe`] asks and reports answers and the clock.

use std::time::{Duration, Instant};

use boxless_timer::TimerTable;

/// Probe timers and thresholds.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    /// Time between probes of one server.
    pub interval: Duration,
    /// A probe unanswered this long failed.
    pub timeout: Duration,
    /// Failed probes in a row before a server is marked down.
    pub down_after: u32,
    /// Good probes in a row before it is up again.
    pub up_after: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(400),
            down_after: 3,
            up_after: 2,
        }
    }
}

/// A server's deadlines.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Its next probe.
    Probe,
    /// The outstanding probe fails.
    Answer,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

#[derive(Debug, Clone)]
struct Target {
    down: bool,
    fails: u32,
    oks: u32,
    timers: TimerTable<Timer, 2>,
    /// The outstanding probe's sequence number.
    pending: Option<u64>,
}

/// A change of a server's probe verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Server index.
    pub server: usize,
    /// True when it is now considered down.
    pub down: bool,
}

/// Probe state of every server.
#[derive(Debug)]
pub struct Prober {
    s: ProbeSettings,
    targets: Vec<Target>,
    seq: u64,
    changes: Vec<Verdict>,
}

impl Prober {
    /// `n` servers, all presumed up, first probes spread over one interval.
    pub fn new(now: Instant, n: usize, s: ProbeSettings) -> Prober {
        let step = s.interval / (n.max(1) as u32);
        Prober {
            targets: (0..n)
                .map(|i| {
                    let mut timers = TimerTable::default();
                    timers.set(Timer::Probe, now + step * i as u32);
                    Target {
                        down: false,
                        fails: 0,
                        oks: 0,
                        timers,
                        pending: None,
                    }
                })
                .collect(),
            s,
            seq: 0,
            changes: Vec::new(),
        }
    }

    /// A probe to send now: (server index, sequence number to put in the request).
    pub fn poll_probe(&mut self, now: Instant) -> Option<(usize, u64)> {
        let i = self.targets.iter().position(|t| {
            t.pending.is_none() && t.timers.get(Timer::Probe).is_some_and(|at| at <= now)
        })?;
        self.seq += 1;
        let t = &mut self.targets[i];
        t.pending = Some(self.seq);
        t.timers.set(Timer::Answer, now + self.s.timeout);
        t.timers.set(Timer::Probe, now + self.s.interval);
        Some((i, self.seq))
    }

    /// An answer to probe `seq`; `alive` when the server answered as a healthy one would.
    pub fn answered(&mut self, seq: u64, alive: bool) {
        let Some(i) = self.targets.iter().position(|t| t.pending == Some(seq)) else {
            return;
        };
        self.targets[i].pending = None;
        self.targets[i].timers.clear(Timer::Answer);
        self.record(i, alive);
    }

    /// Expires unanswered probes.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.targets.len() {
            if self.targets[i].timers.fired(Timer::Answer, now) {
                self.targets[i].pending = None;
                self.record(i, false);
            }
        }
    }

    fn record(&mut self, i: usize, alive: bool) {
        let t = &mut self.targets[i];
        if alive {
            t.oks += 1;
            t.fails = 0;
            if t.down && t.oks >= self.s.up_after {
                t.down = false;
                self.changes.push(Verdict {
                    server: i,
                    down: false,
                });
            }
        } else {
            t.fails += 1;
            t.oks = 0;
            if !t.down && t.fails >= self.s.down_after {
                t.down = true;
                self.changes.push(Verdict {
                    server: i,
                    down: true,
                });
            }
        }
    }

    /// Verdicts that changed since the last call.
    pub fn poll_change(&mut self) -> Option<Verdict> {
        if self.changes.is_empty() {
            None
        } else {
            Some(self.changes.remove(0))
        }
    }

    /// The next time anything is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.targets
            .iter()
            .filter_map(|t| match t.pending {
                // The next probe waits for the outstanding one's answer or failure.
                Some(_) => t.timers.get(Timer::Answer),
                None => t.timers.get(Timer::Probe),
            })
            .min()
    }
}

/// Whether a response to OPTIONS shows a healthy server: any final answer but a server
/// error or timeout (503 means draining or overloaded).
pub fn alive(code: u16) -> bool {
    (200..500).contains(&code) && code != 408
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(p: &mut Prober, now: Instant, answer: impl Fn(usize) -> Option<bool>) {
        p.handle_timeout(now);
        while let Some((server, seq)) = p.poll_probe(now) {
            if let Some(ok) = answer(server) {
                p.answered(seq, ok);
            }
        }
    }

    #[test]
    fn down_after_three_misses_up_after_two_answers() {
        let t0 = Instant::now();
        let s = ProbeSettings::default();
        let mut p = Prober::new(t0, 2, s);
        let mut now = t0;
        let mut changes = Vec::new();
        // Server 1 stops answering at 1 s and comes back at 5 s.
        for _ in 0..400 {
            let t = now - t0;
            step(&mut p, now, |i| {
                if i == 1 && t >= Duration::from_secs(1) && t < Duration::from_secs(5) {
                    None
                } else {
                    Some(true)
                }
            });
            while let Some(c) = p.poll_change() {
                changes.push((c, now - t0));
            }
            now += Duration::from_millis(25);
        }
        assert_eq!(changes.len(), 2, "{changes:?}");
        let (down, at) = changes[0];
        assert_eq!(
            down,
            Verdict {
                server: 1,
                down: true
            }
        );
        // Probes at 1.25, 1.75 and 2.25 s go unanswered; the third times out at 2.65 s.
        assert!(
            at >= Duration::from_millis(2600) && at <= Duration::from_millis(2700),
            "down at {at:?}"
        );
        let (up, at) = changes[1];
        assert_eq!(
            up,
            Verdict {
                server: 1,
                down: false
            }
        );
        assert!(
            at >= Duration::from_millis(5000) && at <= Duration::from_millis(6100),
            "up at {at:?}"
        );
    }

    #[test]
    fn one_lost_probe_changes_nothing_and_503_counts_as_down() {
        let t0 = Instant::now();
        let mut p = Prober::new(t0, 1, ProbeSettings::default());
        let (_, seq) = p.poll_probe(t0).unwrap();
        p.answered(seq, false);
        let (_, seq) = p.poll_probe(t0 + Duration::from_millis(500)).unwrap();
        p.answered(seq, true);
        assert_eq!(p.poll_change(), None);
        assert!(alive(200) && alive(405) && !alive(503) && !alive(408));
    }
}
