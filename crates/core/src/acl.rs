//! The SIP trust boundary: which sources may reach call handling ([`PeerFilter`]) and how
//! fast each may start calls ([`FloodGuard`]).
//!
//! Both sit on the per-packet path of the router and the servers, so neither allocates nor
//! locks: the filter is a short list of networks scanned in order, the guard a fixed table
//! of atomic counters. A table keyed by a stranger's address must stay bounded whatever the
//! stranger sends; this one is bounded by construction (its size never changes).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

/// The networks whose requests reach call handling (`sip.trusted_peers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFilter {
    nets: Vec<IpNet>,
}

impl PeerFilter {
    /// Parses CIDRs (`10.0.0.0/24`, `::1/128`) or bare addresses (one host). The error
    /// names the entry that is not one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<PeerFilter, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.as_ref().trim();
            let net = match e.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match e.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "`{e}` is not an IPv4/IPv6 network; write e.g. \"10.0.0.0/24\", \"2001:db8::/32\" or one address"
                        ));
                    }
                },
            };
            nets.push(net);
        }
        Ok(PeerFilter { nets })
    }

    /// Loopback only (`127.0.0.0/8`, `::1/128`): the default.
    pub fn loopback() -> PeerFilter {
        PeerFilter::parse(&["127.0.0.0/8", "::1/128"]).expect("literal networks are valid")
    }

    /// True when `ip` is inside one of the networks. An IPv4-mapped IPv6 address (a
    /// dual-stack socket's view of an IPv4 peer) counts as its IPv4 address.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// True when every trusted network is loopback.
    pub fn is_loopback_only(&self) -> bool {
        self.nets.iter().all(|n| match n {
            IpNet::V4(n) => n.network().is_loopback() && n.prefix_len() >= 8,
            IpNet::V6(n) => n.network().is_loopback() && n.prefix_len() == 128,
        })
    }

    /// The networks, as configured.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// Who may reach call handling, and how fast (`sip.trusted_peers`,
/// `sip.max_invites_per_second_per_peer`): the first thing the router and every server
/// ask of a message.
#[derive(Debug)]
pub struct Gate {
    /// Trusted sources.
    pub peers: PeerFilter,
    /// New INVITEs per second per trusted source.
    pub invites: FloodGuard,
    /// `403`s per second per untrusted source: past it they are dropped silently, so
    /// that forged sources cannot use us to send replies at a victim.
    pub refusals: FloodGuard,
}

/// `403`s per second one untrusted source gets before the rest are dropped.
pub const REFUSALS_PER_SECOND: u32 = 10;

/// What the trust boundary does with a message, before anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Goes on.
    Pass,
    /// A request from an untrusted source: `403`, nothing else.
    Forbidden,
    /// A trusted source over its INVITE rate: `503` with `Retry-After`.
    Flood,
    /// Dropped without an answer (an untrusted ACK or response, or refusals over budget).
    Drop,
}

impl Gate {
    /// A gate trusting `peers`, admitting `per_peer` new INVITEs per second from each;
    /// `key` seeds the guards' hashes.
    pub fn new(peers: PeerFilter, per_peer: u32, key: u64) -> Gate {
        Gate {
            peers,
            invites: FloodGuard::new(per_peer, key),
            refusals: FloodGuard::new(REFUSALS_PER_SECOND, key.rotate_left(32)),
        }
    }

    /// A request from `src`: trusted ones pass (an INVITE only within the peer's rate);
    /// others get a `403`, except an ACK (never answered) and past the refusal budget.
    pub fn request(&self, src: IpAddr, ack: bool, invite: bool, now_ms: u64) -> Admission {
        if !self.peers.allows(src) {
            return if ack || !self.refusals.admit(src, now_ms) {
                Admission::Drop
            } else {
                Admission::Forbidden
            };
        }
        if invite && !self.invites.admit(src, now_ms) {
            return Admission::Flood;
        }
        Admission::Pass
    }

    /// A response from `src`: only a trusted peer's is read.
    pub fn response(&self, src: IpAddr) -> Admission {
        if self.peers.allows(src) {
            Admission::Pass
        } else {
            Admission::Drop
        }
    }
}

/// Slots of a [`FloodGuard`]: enough for every trunk peer an operator has, with room for
/// collisions; 64 KiB of counters.
const SLOTS: usize = 8192;
/// Slots probed for one address before it shares a counter.
const PROBES: usize = 4;

/// A per-source rate limit: at most `limit` events per window (one second unless made
/// with [`FloodGuard::per_window`]) per IP address, in a fixed table of atomic counters.
///
/// Each slot packs (16-bit address fingerprint, 16-bit window number, 32-bit count) into
/// one `AtomicU64`. A slot whose window is past is free. When an address finds all of its
/// [`PROBES`] slots taken by other addresses active in the same second, it counts on its
/// first slot together with that address: under a flood of many sources the limit gets
/// stricter, never looser, and memory never grows. The hash is keyed at random per process
/// so that nobody can pick addresses that collide with a given peer's.
#[derive(Debug)]
pub struct FloodGuard {
    limit: u32,
    window_ms: u64,
    key: u64,
    slots: Box<[AtomicU64]>,
}

impl FloodGuard {
    /// At most `limit` events per second per address; `key` seeds the slot hash.
    pub fn new(limit: u32, key: u64) -> FloodGuard {
        FloodGuard::per_window(limit, 1000, key)
    }

    /// At most `limit` events per `window_ms` per address.
    pub fn per_window(limit: u32, window_ms: u64, key: u64) -> FloodGuard {
        FloodGuard {
            limit,
            window_ms: window_ms.max(1),
            key,
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts one event from `ip` at `now_ms`; false when it is over the limit.
    pub fn admit(&self, ip: IpAddr, now_ms: u64) -> bool {
        let h = self.hash(ip.to_canonical());
        let fp = (h >> 48) as u16 as u64;
        let sec = (now_ms / self.window_ms) as u16 as u64;
        let base = h as usize % SLOTS;
        for probe in 0..PROBES {
            let slot = &self.slots[(base + probe) % SLOTS];
            let mut cur = slot.load(Ordering::Relaxed);
            loop {
                let (s_fp, s_sec, count) = (cur >> 48, (cur >> 32) & 0xffff, cur & 0xffff_ffff);
                let current = s_sec == sec && cur != 0;
                let next = if !current {
                    (fp << 48) | (sec << 32) | 1
                } else if s_fp == fp || probe == PROBES - 1 {
                    // This address's slot, or the last probe: count here.
                    if count >= self.limit as u64 {
                        return false;
                    }
                    cur + 1
                } else {
                    break; // another address's live slot: probe on
                };
                match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return true,
                    Err(actual) => cur = actual,
                }
            }
        }
        // Every probe was another address's live slot: share the first one.
        let slot = &self.slots[base];
        let prev = slot.fetch_add(1, Ordering::Relaxed);
        (prev & 0xffff_ffff) < self.limit as u64
    }

    /// Whether `ip` is still under the limit at `now_ms`, without counting anything.
    pub fn peek(&self, ip: IpAddr, now_ms: u64) -> bool {
        let h = self.hash(ip.to_canonical());
        let fp = h >> 48 & 0xffff;
        let window = (now_ms / self.window_ms) & 0xffff;
        let base = h as usize % SLOTS;
        for probe in 0..PROBES {
            let cur = self.slots[(base + probe) % SLOTS].load(Ordering::Relaxed);
            let (s_fp, s_win, count) = (cur >> 48, (cur >> 32) & 0xffff, cur & 0xffff_ffff);
            if cur == 0 || s_win != window {
                return true; // a free slot: `admit` would start counting here
            }
            if s_fp == fp || probe == PROBES - 1 {
                return count < self.limit as u64;
            }
        }
        true
    }

    fn hash(&self, ip: IpAddr) -> u64 {
        let v = match ip {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        };
        let mut z = self.key ^ (v as u64) ^ ((v >> 64) as u64).rotate_left(29);
        // SplitMix64's finaliser: every input bit moves every output bit.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn filter_matches_networks_hosts_and_mapped_addresses() {
        let f = PeerFilter::parse(&["10.0.0.0/24", "192.0.2.7", "2001:db8::/32"]).unwrap();
        assert!(f.allows(ip("10.0.0.200")));
        assert!(!f.allows(ip("10.0.1.1")));
        assert!(f.allows(ip("192.0.2.7")));
        assert!(!f.allows(ip("192.0.2.8")));
        assert!(f.allows(ip("2001:db8::5")));
        assert!(
            f.allows(ip("::ffff:10.0.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(!f.allows(ip("::1")));
        let lo = PeerFilter::loopback();
        assert!(lo.allows(ip("127.0.0.3")) && lo.allows(ip("::1")));
        assert!(lo.is_loopback_only());
        assert!(!f.is_loopback_only());
        let e = PeerFilter::parse(&["10.0.0.0/33"]).unwrap_err();
        assert!(e.contains("10.0.0.0/33"), "{e}");
        assert!(PeerFilter::parse(&["example.net"]).is_err());
    }

    #[test]
    fn longer_windows_and_peeking() {
        let g = FloodGuard::per_window(2, 60_000, 7);
        let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
        let t = 1_000_000 * 60_000;
        assert!(g.peek(a, t) && g.peek(a, t), "peeking counts nothing");
        assert!(g.admit(a, t) && g.admit(a, t + 30_000));
        assert!(!g.peek(a, t + 59_999), "two in the minute: over");
        assert!(
            g.peek(b, t) && g.admit(b, t),
            "another address has its own count"
        );
        assert!(g.peek(a, t + 60_000), "the next minute starts again");
    }

    #[test]
    fn guard_limits_each_address_per_second() {
        let g = FloodGuard::new(3, 42);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t = 5_000_000;
        assert!((0..3).all(|_| g.admit(a, t)));
        assert!(!g.admit(a, t + 999), "fourth in the same second");
        assert!(g.admit(b, t + 10), "another address has its own count");
        assert!(g.admit(a, t + 1000), "a new second starts again");
    }

    #[test]
    fn guard_stays_bounded_under_many_sources() {
        // More live sources than slots: memory is fixed, and a flooder still cannot pass
        // more than the limit in any one slot.
        let g = FloodGuard::new(2, 7);
        let t = 9_000;
        let mut admitted = 0u64;
        for i in 0..(3 * SLOTS as u32) {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            admitted += g.admit(a, t) as u64;
        }
        assert!(admitted <= 2 * SLOTS as u64 + 2 * SLOTS as u64 / PROBES as u64);
        let a = ip("10.0.0.1");
        let passed = (0..100).filter(|_| g.admit(a, t)).count();
        assert!(passed <= 2, "{passed}");
        assert!(g.admit(a, t + 1000));
    }
}
