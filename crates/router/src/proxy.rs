//! Proxy mode: a stateful INVITE proxy with failover (RFC 3261 §16), sans-IO: time comes
//! in as arguments, what to send is drained; the task that owns the socket is in
//! [`crate::driver`].
//!
//! The router adds its Via, rewrites the Request-URI to the chosen server and relays
//! responses. Each server tried is a branch, an INVITE client transaction
//! ([`boxless_sip::UacInvite`]: retransmissions, the answer and ring waits, the ACK of a
//! failure). A server that sends 408 or 5xx, or nothing within `answer_timeout`, is
//! dropped for that call (ACKed or CANCELled) and the next available server is tried; the
//! caller sees an error only when none is left. With `record_route` the forwarded INVITE
//! carries our Record-Route, and in-dialog requests (ACK, BYE, re-INVITE, UPDATE) that
//! come back with our Route are forwarded statelessly as a loose router (§16.12), their
//! responses relayed by Via; the router still holds no dialog state. Without it, ACK for
//! 2xx and BYE go straight to the server's Contact.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxless_core::{PhoneNumber, Rng};
use boxless_sip::{
    InviteFired, InviteWaits, Message, Method, Received, SipTimers, UacInvite, write_response,
};
use boxless_timer::{TimerQueue, TimerTable};

use crate::decide::{RouterCore, Verdict};
use crate::{policy, relay};

/// Branches of statelessly forwarded in-dialog requests start with this.
const STATELESS_BRANCH: &str = "z9hG4bKrr";

/// Proxy timers.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// A server must send some response within this.
    pub answer_timeout: Duration,
    /// RFC 3261 T1 (INVITE retransmission over UDP).
    pub t1: Duration,
    /// How long a finished transaction is kept to absorb retransmissions.
    pub linger: Duration,
    /// After a provisional response, how long to wait for the final one.
    pub ring_timeout: Duration,
    /// Transactions held at once (each lingers `linger` after its final response); a new
    /// INVITE past it gets `503`.
    pub max_transactions: usize,
    /// Add Record-Route, so that in-dialog requests pass the router.
    pub record_route: bool,
    /// The router's SIP-over-TLS address: a caller on TLS gets a second Record-Route
    /// naming it (RFC 5658), the first one facing the servers over UDP.
    pub tls_local: Option<SocketAddr>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            answer_timeout: Duration::from_secs(2),
            t1: Duration::from_millis(500),
            linger: Duration::from_secs(32),
            ring_timeout: Duration::from_secs(60),
            max_transactions: 32_768,
            record_route: false,
            tls_local: None,
        }
    }
}

/// What the proxy must send.
#[derive(Debug)]
pub enum Output<R> {
    /// To the caller, through its reply handle.
    ToCaller {
        /// Bytes.
        bytes: Vec<u8>,
        /// Where.
        reply: R,
    },
    /// To a server.
    ToServer {
        /// Bytes.
        bytes: Vec<u8>,
        /// Its SIP address.
        addr: SocketAddr,
    },
    /// Loose routing: an in-dialog request or its response, to the next hop over UDP.
    Relay {
        /// Bytes.
        bytes: Vec<u8>,
        /// The next hop.
        addr: SocketAddr,
    },
}

/// The proxy's own deadlines for a call (its server side, facing the caller).
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// The caller cancelled and the server has not answered with a final yet: past this,
    /// the caller gets its `487` from us.
    CancelAnswer,
    /// The caller has its final answer: the transaction absorbs retransmissions until then.
    Linger,
}

impl From<Timer> for usize {
    fn from(t: Timer) -> usize {
        t as usize
    }
}

/// One server tried for a call: the INVITE client transaction towards it.
#[derive(Debug)]
struct Branch {
    server: usize,
    uac: UacInvite,
}

/// A call the proxy holds, from the caller's INVITE until its final answer has lingered.
#[derive(Debug)]
struct Tsx<R> {
    /// The caller's key (its branch, sent-by and Call-ID).
    key: String,
    invite: Vec<u8>,
    reply: R,
    /// Recipient (deposit) or link number (retrieval), as first decided.
    user: PhoneNumber,
    /// Retrievals go to the owner only: never failed over.
    retrieval: bool,
    /// Every server tried, in order; the last is the live one until the caller has its
    /// final answer.
    branches: Vec<Branch>,
    timers: TimerTable<Timer, 2>,
    last_final: Option<Vec<u8>>,
    cancelled: bool,
}

impl<R> Tsx<R> {
    fn done(&self) -> bool {
        self.last_final.is_some()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.branches
            .iter()
            .filter_map(|b| b.uac.poll_timeout())
            .chain(self.timers.next())
            .min()
    }
}

/// The proxy's transactions, keyed by the caller's branch.
#[derive(Debug)]
pub struct Proxy<R> {
    core: Arc<RouterCore>,
    local: SocketAddr,
    s: ProxySettings,
    rng: Rng,
    tsx: HashMap<u64, Tsx<R>>,
    by_key: HashMap<String, u64>,
    by_branch: HashMap<String, u64>,
    next_id: u64,
    timers: TimerQueue<u64>,
    out: Vec<Output<R>>,
    scratch: String,
    /// Keys the branches of statelessly forwarded requests (§16.11: deterministic, and
    /// not guessable from outside).
    branch_key: u64,
}

impl<R: Clone> Proxy<R> {
    /// A proxy whose Via names `local`.
    pub fn new(
        core: Arc<RouterCore>,
        local: SocketAddr,
        s: ProxySettings,
        mut rng: Rng,
    ) -> Proxy<R> {
        Proxy {
            branch_key: rng.next_u64(),
            core,
            local,
            s,
            rng,
            tsx: HashMap::new(),
            by_key: HashMap::new(),
            by_branch: HashMap::new(),
            next_id: 0,
            timers: TimerQueue::default(),
            out: Vec::new(),
            scratch: String::new(),
        }
    }

    /// Everything to send now.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output<R>> {
        self.out.drain(..)
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.tsx.len()
    }

    /// True when no transaction is held.
    pub fn is_empty(&self) -> bool {
        self.tsx.is_empty()
    }

    /// The earliest timer.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.timers.earliest()
    }

    /// A message from the network. `from_server` is true when `src` is a server's address.
    pub fn handle(&mut self, now: Instant, now_ms: u64, bytes: &[u8], stream: bool, reply: R) {
        let Ok(msg) = Message::parse(bytes, stream) else {
            return;
        };
        self.handle_parsed(now, now_ms, &msg, bytes, reply);
    }

    /// [`Proxy::handle`] for a message the caller has parsed already (`bytes` its source).
    pub fn handle_parsed(
        &mut self,
        now: Instant,
        now_ms: u64,
        msg: &Message<'_>,
        bytes: &[u8],
        reply: R,
    ) {
        if self.s.record_route && msg.is_request() && msg.defect.is_none() {
            let ours = [self.local, self.s.tls_local.unwrap_or(self.local)];
            let skip = relay::routes_to_us(msg, &ours);
            if skip > 0 {
                return self.loose_route(msg, reply, skip);
            }
        }
        match msg.method() {
            None => self.response(now, now_ms, msg),
            Some(Method::Invite) if msg.defect.is_none() => {
                self.invite(now, now_ms, msg, bytes, reply)
            }
            Some(Method::Cancel) if msg.defect.is_none() => self.cancel(now, msg, reply),
            Some(Method::Ack) => {}
            Some(_) => self.stateless(now_ms, msg, reply),
        }
    }
    /// An in-dialog request that names us in its top Route: on to the next hop, provided
    /// that is one of our servers or a trusted peer (never a relay to strangers).
    fn loose_route(&mut self, msg: &Message<'_>, reply: R, skip: usize) {
        let answer = |p: &mut Self, code, reason| {
            if msg.method() != Some(Method::Ack) {
                p.out.push(Output::ToCaller {
                    bytes: relay::simple(msg, code, reason),
                    reply: reply.clone(),
                });
            }
        };
        if msg.max_forwards == Some(0) {
            return answer(self, 483, "Too Many Hops");
        }
        let theirs = msg.top_via().and_then(|v| v.branch).unwrap_or(msg.call_id);
        let h = boxless_core::util::fnv1a(
            self.branch_key ^ boxless_core::util::FNV_BASIS,
            theirs.bytes().chain(msg.call_id.bytes()),
        );
        let branch = format!("{STATELESS_BRANCH}{h:016x}");
        let Some((bytes, addr)) = relay::forward_in_dialog(msg, self.local, &branch, skip) else {
            return answer(self, 404, "Not Found");
        };
        let known = self.core.board.slots.iter().any(|s| s.sip == addr)
            || self.core.gate.peers.allows(addr.ip());
        if !known || addr == self.local {
            metrics::counter!("boxless_sip_refused_total", "reason" => "route_to_stranger")
                .increment(1);
            return answer(self, 403, "Forbidden");
        }
        metrics::counter!("boxless_router_routed_total").increment(1);
        self.out.push(Output::Relay { bytes, addr });
    }

    fn stateless(&mut self, now_ms: u64, msg: &Message<'_>, reply: R) {
        let v = self.core.decide(msg, now_ms, &mut self.rng);
        let mut b = Vec::with_capacity(512);
        if self.core.write(msg, v, &mut self.scratch, &mut b) {
            self.out.push(Output::ToCaller { bytes: b, reply });
        }
    }

    fn key(msg: &Message<'_>) -> Option<String> {
        let v = msg.top_via()?;
        let mut k = String::with_capacity(64);
        let _ = write!(
            k,
            "{}|{}:{}|{}",
            v.branch.unwrap_or(msg.call_id),
            v.host,
            v.port.unwrap_or(0),
            msg.call_id
        );
        Some(k)
    }

    fn invite(&mut self, now: Instant, now_ms: u64, msg: &Message<'_>, bytes: &[u8], reply: R) {
        let Some(key) = Self::key(msg) else { return };
        if let Some(t) = self.by_key.get(&key).and_then(|id| self.tsx.get(id)) {
            // A retransmission: repeat what the caller last got.
            let b = match &t.last_final {
                Some(f) => f.clone(),
                None => relay::simple(msg, 100, "Trying"),
            };
            self.out.push(Output::ToCaller { bytes: b, reply });
            return;
        }
        if self.tsx.len() >= self.s.max_transactions {
            metrics::counter!("boxless_sip_refused_total", "reason" => "transactions_full")
                .increment(1);
            let mut b = Vec::with_capacity(512);
            let full = crate::decide::Verdict::Respond {
                code: 503,
                reason: "Service Unavailable",
                extra: crate::decide::Extra::RetryAfterOne,
            };
            if self.core.write(msg, full, &mut self.scratch, &mut b) {
                self.out.push(Output::ToCaller { bytes: b, reply });
            }
            return;
        }
        let v = self.core.decide(msg, now_ms, &mut self.rng);
        let Verdict::Route {
            server,
            user,
            retrieval,
            ..
        } = v
        else {
            let mut b = Vec::with_capacity(512);
            if self.core.write(msg, v, &mut self.scratch, &mut b) {
                self.out.push(Output::ToCaller { bytes: b, reply });
            }
            return;
        };
        self.out.push(Output::ToCaller {
            bytes: relay::simple(msg, 100, "Trying"),
            reply: reply.clone(),
        });
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(key.clone(), id);
        self.tsx.insert(
            id,
            Tsx {
                key,
                invite: bytes.to_vec(),
                reply,
                user,
                retrieval,
                branches: Vec::with_capacity(2),
                timers: TimerTable::default(),
                last_final: None,
                cancelled: false,
            },
        );
        self.forward_to(now, id, server);
        self.rearm(id);
    }

    /// Arms the queue for call `id`'s next deadline; forgets a call whose time is over.
    fn rearm(&mut self, id: u64) {
        let Some(t) = self.tsx.get(&id) else {
            return self.timers.arm(id, None);
        };
        match t.poll_timeout() {
            Some(at) => self.timers.arm(id, Some(at)),
            // Nothing left to wait for (the answer has lingered).
            None => self.remove(id),
        }
    }

    fn remove(&mut self, id: u64) {
        self.timers.arm(id, None);
        if let Some(t) = self.tsx.remove(&id) {
            self.by_key.remove(&t.key);
            for b in &t.branches {
                self.by_branch.remove(b.uac.branch());
            }
        }
    }

    fn forward_to(&mut self, now: Instant, id: u64, server: usize) {
        let branch = format!("z9hG4bK{:016x}", self.rng.next_u64());
        let addr = self.core.board.slots[server].sip;
        let Some(t) = self.tsx.get_mut(&id) else {
            return;
        };
        let Ok(msg) = Message::parse(&t.invite, false) else {
            return;
        };
        let rr = record_route_lines(&self.s, self.local, &msg);
        let fwd = relay::build_forward(
            &msg,
            &format!("sip:{}@{addr}", t.user),
            self.local,
            &branch,
            &rr,
        );
        let timers = SipTimers {
            t1: self.s.t1,
            ..SipTimers::default()
        };
        let waits = InviteWaits {
            answer: self.s.answer_timeout,
            ring: self.s.ring_timeout,
        };
        // The servers are reached over UDP.
        let uac = UacInvite::new(now, fwd.clone(), branch.clone(), false, timers, waits);
        t.branches.push(Branch { server, uac });
        self.by_branch.insert(branch, id);
        self.out.push(Output::ToServer { bytes: fwd, addr });
        metrics::counter!("boxless_router_forwarded_total").increment(1);
    }

    /// Tries the next available server for call `id`, or answers the caller with
    /// `fallback` (the last server's answer) or a `503`.
    fn failover(&mut self, now: Instant, now_ms: u64, id: u64, fallback: Option<Vec<u8>>) {
        let Some(t) = self.tsx.get(&id) else { return };
        // The same policy as a first choice, among the servers not tried yet.
        let choice = if t.cancelled || t.retrieval {
            None
        } else {
            let branches = &t.branches;
            policy::pick_where(
                &self.core.board,
                self.core.board.status_time(now_ms),
                self.core.ttl_ms,
                &mut self.rng,
                |i| !branches.iter().any(|b| b.server == i),
            )
        };
        if let Some(server) = choice {
            metrics::counter!("boxless_router_failovers_total").increment(1);
            tracing::info!(server = %self.core.board.slots[server].id, "failing over");
            return self.forward_to(now, id, server);
        }
        let b = match fallback {
            Some(b) => b,
            None if t.cancelled => {
                let Ok(inv) = Message::parse(&t.invite, false) else {
                    return;
                };
                relay::simple(&inv, 487, "Request Terminated")
            }
            None => {
                let Ok(msg) = Message::parse(&t.invite, false) else {
                    return;
                };
                let mut b = Vec::new();
                let extra = format!("Retry-After: {}\r\n", self.core.retry_after);
                write_response(
                    &mut b,
                    &msg,
                    503,
                    "Service Unavailable",
                    Some(&"proxy"),
                    None,
                    extra.as_bytes(),
                    None,
                );
                b
            }
        };
        self.finish(now, id, b);
    }

    /// The caller's final answer: sent now, repeated to its retransmissions for `linger`.
    fn finish(&mut self, now: Instant, id: u64, final_bytes: Vec<u8>) {
        let Some(t) = self.tsx.get_mut(&id) else {
            return;
        };
        t.last_final = Some(final_bytes.clone());
        t.timers.clear(Timer::CancelAnswer);
        t.timers.set(Timer::Linger, now + self.s.linger);
        self.out.push(Output::ToCaller {
            bytes: final_bytes,
            reply: t.reply.clone(),
        });
    }

    fn response(&mut self, now: Instant, now_ms: u64, msg: &Message<'_>) {
        if msg.defect.is_some() {
            return;
        }
        let Some(via) = msg.top_via() else { return };
        if via.branch.is_some_and(|b| b.starts_with(STATELESS_BRANCH))
            && let Some((bytes, addr)) = relay::relay_response(msg)
        {
            // A response to an in-dialog request we routed.
            self.out.push(Output::Relay { bytes, addr });
            return;
        }
        if msg.cseq.is_none_or(|c| c.method != "INVITE") {
            return; // 200 to our CANCEL
        }
        let Some(branch) = via.branch else { return };
        let Some(&id) = self.by_branch.get(branch) else {
            return;
        };
        self.branch_response(now, now_ms, id, branch, msg);
        self.rearm(id);
    }

    fn branch_response(
        &mut self,
        now: Instant,
        now_ms: u64,
        id: u64,
        branch: &str,
        msg: &Message<'_>,
    ) {
        let Some(t) = self.tsx.get_mut(&id) else {
            return;
        };
        let Some(i) = t.branches.iter().position(|b| b.uac.branch() == branch) else {
            return;
        };
        let code = msg.status().unwrap_or(500);
        let last = i + 1 == t.branches.len();
        let live = last && !t.done();
        let b = &mut t.branches[i];
        let addr = self.core.board.slots[b.server].sip;
        let received = b.uac.response(now, code);
        if b.uac.cancel_due(now) {
            Self::cancel_to(&mut self.out, b.uac.message(), addr);
        }
        let ack = |out: &mut Vec<Output<R>>, inv: &[u8]| {
            if let Ok(inv) = Message::parse(inv, false) {
                out.push(Output::ToServer {
                    bytes: relay::build_ack(&inv, msg),
                    addr,
                });
            }
        };
        match received {
            Received::Trying | Received::Stray => {}
            Received::FinalAgain => ack(&mut self.out, b.uac.message()),
            // Only the live server's answers reach the caller (and the 2xx retransmissions of
            // the one that answered): a late 2xx from a server given up on would fork the call.
            Received::Provisional if live => self.out.push(Output::ToCaller {
                bytes: relay::strip_top_via(msg),
                reply: t.reply.clone(),
            }),
            Received::Accepted if last => self.out.push(Output::ToCaller {
                bytes: relay::strip_top_via(msg),
                reply: t.reply.clone(),
            }),
            Received::Provisional | Received::Accepted => {}
            Received::Final if code < 300 => {
                if live {
                    self.finish(now, id, relay::strip_top_via(msg));
                }
            }
            Received::Final => {
                ack(&mut self.out, b.uac.message());
                if !live {
                    return;
                }
                let relayed = relay::strip_top_via(msg);
                if code == 408 || (500..600).contains(&code) {
                    self.failover(now, now_ms, id, Some(relayed));
                } else {
                    self.finish(now, id, relayed);
                }
            }
        }
    }

    fn cancel(&mut self, now: Instant, msg: &Message<'_>, reply: R) {
        self.out.push(Output::ToCaller {
            bytes: relay::simple(msg, 200, "OK"),
            reply,
        });
        let Some(key) = Self::key(msg) else { return };
        let Some(&id) = self.by_key.get(&key) else {
            return;
        };
        let Some(t) = self.tsx.get_mut(&id) else {
            return;
        };
        if t.done() {
            return;
        }
        t.cancelled = true;
        if let Some(b) = t.branches.last_mut()
            && b.uac.cancel(now)
        {
            Self::cancel_to(
                &mut self.out,
                b.uac.message(),
                self.core.board.slots[b.server].sip,
            );
        }
        // If the server never answers, the caller still gets its 487.
        t.timers
            .set(Timer::CancelAnswer, now + self.s.answer_timeout);
        self.rearm(id);
    }

    /// The CANCEL for a forwarded INVITE, to its server.
    fn cancel_to(out: &mut Vec<Output<R>>, forwarded: &[u8], addr: SocketAddr) {
        if let Ok(inv) = Message::parse(forwarded, false) {
            out.push(Output::ToServer {
                bytes: relay::build_cancel(&inv),
                addr,
            });
        }
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant, now_ms: u64) {
        while let Some(id) = self.timers.pop(now) {
            self.run_timers(now, now_ms, id);
            self.rearm(id);
        }
    }

    fn run_timers(&mut self, now: Instant, now_ms: u64, id: u64) {
        let Some(t) = self.tsx.get_mut(&id) else {
            return;
        };
        let mut gave_up = false;
        let n = t.branches.len();
        let done = t.done();
        for (i, b) in t.branches.iter_mut().enumerate() {
            let addr = self.core.board.slots[b.server].sip;
            match b.uac.handle_timeout(now) {
                None => {}
                Some(InviteFired::Retransmit) => self.out.push(Output::ToServer {
                    bytes: b.uac.message().to_vec(),
                    addr,
                }),
                Some(fired) => {
                    if fired == InviteFired::NoFinal {
                        Self::cancel_to(&mut self.out, b.uac.message(), addr);
                    }
                    if i + 1 == n && !done {
                        tracing::warn!(server = %self.core.board.slots[b.server].id, "server did not answer in time");
                        gave_up = true;
                    }
                }
            }
        }
        if t.timers.fired(Timer::CancelAnswer, now) && !t.done() {
            let Ok(inv) = Message::parse(&t.invite, false) else {
                return;
            };
            let b = relay::simple(&inv, 487, "Request Terminated");
            return self.finish(now, id, b);
        }
        if t.timers.fired(Timer::Linger, now) {
            return self.remove(id);
        }
        if gave_up {
            self.failover(now, now_ms, id, None);
        }
    }
}

/// Our Record-Route lines for a forwarded INVITE: one facing the servers (UDP), and a
/// second facing a caller on TCP or TLS (RFC 5658 double record-routing).
fn record_route_lines(s: &ProxySettings, local: SocketAddr, inv: &Message<'_>) -> String {
    if !s.record_route {
        return String::new();
    }
    let mut rr = format!("Record-Route: <sip:{};lr>\r\n", local);
    let transport = inv.top_via().map(|v| v.transport.to_ascii_uppercase());
    match (transport.as_deref(), s.tls_local) {
        (Some("TLS"), Some(t)) => {
            rr.push_str(&format!("Record-Route: <sip:{t};transport=tls;lr>\r\n"))
        }
        (Some("TCP"), _) => rr.push_str(&format!(
            "Record-Route: <sip:{};transport=tcp;lr>\r\n",
            local
        )),
        _ => {}
    }
    rr
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::{
        LinkPool, Numbering, RouterMode, ServerSlot, StatusBoard, StatusView, now_ms,
    };
    use std::net::SocketAddr;

    const A: &str = "127.0.0.1:5070";
    const B: &str = "127.0.0.1:5072";

    fn proxy() -> Proxy<u8> {
        proxy_with(false)
    }

    fn proxy_with(record_route: bool) -> Proxy<u8> {
        let slots = [A, B]
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let s = ServerSlot::new(
                    &format!("ms{}", i + 1),
                    a.parse().unwrap(),
                    LinkPool::parse(&[format!("+1800555010{i}")]).unwrap(),
                    10,
                );
                s.publish(StatusView::up(10, now_ms()));
                s
            })
            .collect();
        let core = RouterCore {
            board: Arc::new(StatusBoard::new(slots)),
            numbering: Numbering::new("1").unwrap(),
            mode: RouterMode::Proxy,
            ttl_ms: 60_000,
            retry_after: 30,
            redirect_contacts: 2,
            gate: crate::decide::Gate::new(boxless_core::PeerFilter::loopback(), 500, 1),
        };
        Proxy::new(
            Arc::new(core),
            "127.0.0.1:5060".parse().unwrap(),
            ProxySettings {
                max_transactions: 4,
                record_route,
                ..ProxySettings::default()
            },
            Rng::seeded(7),
        )
    }

    fn invite(method: &str) -> Vec<u8> {
        format!(
            "{method} sip:+15551230002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bKcaller\r\n\
From: <sip:+15551230001@h>;tag=c\r\nTo: <sip:+15551230002@h>\r\nCall-ID: pc\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn outputs(p: &mut Proxy<u8>) -> Vec<(Option<SocketAddr>, Vec<u8>)> {
        p.drain()
            .map(|o| match o {
                Output::ToCaller { bytes, .. } => (None, bytes),
                Output::ToServer { bytes, addr } | Output::Relay { bytes, addr } => {
                    (Some(addr), bytes)
                }
            })
            .collect()
    }

    /// The server's answer to the forwarded INVITE `fwd`.
    fn answer(fwd: &[u8], code: u16) -> Vec<u8> {
        let m = Message::parse(fwd, false).unwrap();
        let mut b = Vec::new();
        let extra = if code == 200 {
            let rr: String = m
                .header_values("record-route")
                .map(|v| format!("Record-Route: {v}\r\n"))
                .collect();
            format!("{rr}Contact: <sip:+15551230002@127.0.0.1:5070>\r\n")
        } else {
            String::new()
        };
        write_response(
            &mut b,
            &m,
            code,
            "X",
            Some(&"srv"),
            None,
            extra.as_bytes(),
            None,
        );
        b
    }

    fn status(b: &[u8]) -> Option<u16> {
        Message::parse(b, false).ok().and_then(|m| m.status())
    }

    #[test]
    fn record_route_takes_the_dialog_through_the_router_and_only_to_known_hops() {
        let mut p = proxy_with(true);
        let t0 = Instant::now();
        let inv = String::from_utf8(invite("INVITE"))
            .unwrap()
            .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nRecord-Route: <sip:10.1.1.1;lr>\r\nContact: <sip:+15551230001@127.0.0.1:9000>\r\n");
        p.handle(t0, now_ms(), inv.as_bytes(), false, 1);
        let out = outputs(&mut p);
        let fwd = &out.last().unwrap().1;
        let m = Message::parse(fwd, false).unwrap();
        let rr: Vec<_> = m.header_values("record-route").collect();
        assert_eq!(
            rr,
            ["<sip:127.0.0.1:5060;lr>", "<sip:10.1.1.1;lr>"],
            "ours on top"
        );
        p.handle(t0, now_ms(), &answer(fwd, 200), false, 0);
        let ok = outputs(&mut p);
        let ok = Message::parse(&ok[0].1, false).unwrap();
        assert_eq!(ok.status(), Some(200));
        assert!(
            ok.header_values("record-route")
                .any(|r| r.contains("127.0.0.1:5060"))
        );

        // The caller's BYE, loose-routed through us to the server's Contact.
        let bye = "BYE sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bKbye1\r\n\
Route: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:+15551230001@h>;tag=c\r\nTo: <sip:+15551230002@h>;tag=srv\r\n\
Call-ID: pc\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        p.handle(t0, now_ms(), bye.as_bytes(), false, 1);
        let out = outputs(&mut p);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Some(A.parse().unwrap()));
        let fwd = Message::parse(&out[0].1, false).unwrap();
        assert_eq!(fwd.header("route"), None, "our Route is consumed");
        assert_eq!(fwd.max_forwards, Some(69));
        assert_eq!(fwd.header_values("via").count(), 2);
        // A retransmission is forwarded with the same branch.
        p.handle(t0, now_ms(), bye.as_bytes(), false, 1);
        let again = outputs(&mut p);
        let b2 = Message::parse(&again[0].1, false).unwrap();
        assert_eq!(b2.top_via().unwrap().branch, fwd.top_via().unwrap().branch);
        // The server's 200 goes back by Via, without ours.
        let mut ok = Vec::new();
        write_response(&mut ok, &fwd, 200, "OK", None, None, b"", None);
        p.handle(t0, now_ms(), &ok, false, 0);
        let out = outputs(&mut p);
        assert_eq!(out[0].0, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(
            Message::parse(&out[0].1, false)
                .unwrap()
                .header_values("via")
                .count(),
            1
        );

        // Loose routing refuses what it cannot or must not forward, and never answers an ACK.
        let spent = bye.replace("Max-Forwards: 70", "Max-Forwards: 0");
        p.handle(t0, now_ms(), spent.as_bytes(), false, 1);
        let out = outputs(&mut p);
        assert_eq!((out.len(), status(&out[0].1)), (1, Some(483)));
        let named = bye.replace(
            "sip:+15551230002@127.0.0.1:5070 SIP",
            "sip:x@victim.example SIP",
        );
        p.handle(t0, now_ms(), named.as_bytes(), false, 1);
        let out = outputs(&mut p);
        assert_eq!(
            (out.len(), status(&out[0].1)),
            (1, Some(404)),
            "no name lookups"
        );
        let ack = named
            .replace("BYE sip", "ACK sip")
            .replace("2 BYE", "1 ACK");
        p.handle(t0, now_ms(), ack.as_bytes(), false, 1);
        assert!(
            outputs(&mut p).is_empty(),
            "an ACK is dropped, not answered"
        );

        // A Route through us towards a stranger: refused, nothing relayed.
        let stranger = bye.replace(
            "sip:+15551230002@127.0.0.1:5070 SIP",
            "sip:x@192.0.2.9:5060 SIP",
        );
        p.handle(t0, now_ms(), stranger.as_bytes(), false, 1);
        let out = outputs(&mut p);
        assert_eq!(
            (out.len(), out[0].0, status(&out[0].1)),
            (1, None, Some(403))
        );
    }

    #[test]
    fn a_caller_on_tls_gets_two_record_routes_and_both_are_consumed() {
        let mut p = proxy_with(true);
        p.s.tls_local = Some("127.0.0.1:5061".parse().unwrap());
        let t0 = Instant::now();
        let inv = String::from_utf8(invite("INVITE"))
            .unwrap()
            .replace("SIP/2.0/UDP 127.0.0.1:9000", "SIP/2.0/TLS 127.0.0.1:9000")
            .replace(
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nContact: <sip:c@127.0.0.1:9000;transport=tls>\r\n",
            );
        p.handle(t0, now_ms(), inv.as_bytes(), true, 1);
        let out = outputs(&mut p);
        let fwd = Message::parse(&out.last().unwrap().1, false).unwrap();
        let rr: Vec<_> = fwd.header_values("record-route").collect();
        assert_eq!(
            rr,
            [
                "<sip:127.0.0.1:5060;lr>",
                "<sip:127.0.0.1:5061;transport=tls;lr>"
            ],
            "the servers' side on top, the caller's below (RFC 5658)"
        );
        // The caller's BYE names both (its route set is the list reversed).
        let bye = "BYE sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9000;branch=z9hG4bKbye2\r\n\
Route: <sip:127.0.0.1:5061;transport=tls;lr>, <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:+15551230001@h>;tag=c\r\n\
To: <sip:+15551230002@h>;tag=srv\r\nCall-ID: pc\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        p.handle(t0, now_ms(), bye.as_bytes(), true, 1);
        let out = outputs(&mut p);
        assert_eq!(out[0].0, Some(A.parse().unwrap()), "on to the server");
        assert_eq!(
            Message::parse(&out[0].1, false).unwrap().header("route"),
            None
        );
    }

    #[test]
    fn a_5xx_moves_the_call_to_the_other_server_unseen_by_the_caller() {
        let mut p = proxy();
        let t0 = Instant::now();
        p.handle(t0, now_ms(), &invite("INVITE"), false, 1);
        let out = outputs(&mut p);
        assert_eq!(status(&out[0].1), Some(100));
        let (first, fwd) = out[1].clone();
        let first = first.unwrap();
        let m = Message::parse(&fwd, false).unwrap();
        assert_eq!(m.max_forwards, Some(69));
        assert_eq!(m.header_values("via").count(), 2);
        assert!(
            m.request_uri()
                .unwrap()
                .starts_with("sip:+15551230002@127.0.0.1:507")
        );
        p.handle(t0, now_ms(), &answer(&fwd, 503), false, 0);
        let out = outputs(&mut p);
        // ACK to the failed server, then the INVITE to the other one; nothing to the caller.
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].0, Some(first));
        assert!(out[0].1.starts_with(b"ACK "));
        let (second, fwd2) = out[1].clone();
        assert_ne!(second.unwrap(), first);
        p.handle(t0, now_ms(), &answer(&fwd2, 200), false, 0);
        let out = outputs(&mut p);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, None);
        let ok = Message::parse(&out[0].1, false).unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.header_values("via").count(), 1, "our Via stripped");
        assert_eq!(ok.top_via().unwrap().branch, Some("z9hG4bKcaller"));
        // A retransmitted INVITE gets the 200 again.
        p.handle(t0, now_ms(), &invite("INVITE"), false, 1);
        assert_eq!(status(&outputs(&mut p)[0].1), Some(200));
    }

    #[test]
    fn silence_fails_over_then_503_when_none_is_left() {
        let mut p = proxy();
        let t0 = Instant::now();
        p.handle(t0, now_ms(), &invite("INVITE"), false, 1);
        let out = outputs(&mut p);
        let first = out[1].0.unwrap();
        // Retransmissions at T1, then the answer bound moves on.
        let mut tried = vec![first];
        while let Some(now) = p.poll_timeout() {
            if now > t0 + Duration::from_secs(10) {
                break;
            }
            p.handle_timeout(now, now_ms());
            for (to, b) in outputs(&mut p) {
                match to {
                    Some(a) if b.starts_with(b"INVITE") && !tried.contains(&a) => tried.push(a),
                    Some(_) => {}
                    None => {
                        assert_eq!(status(&b), Some(503), "caller told only when none is left");
                        assert!(String::from_utf8_lossy(&b).contains("Retry-After: 30"));
                        assert_eq!(tried.len(), 2);
                        assert!(now - t0 >= Duration::from_secs(4));
                        return;
                    }
                }
            }
        }
        panic!("no final answer; tried {tried:?}");
    }

    #[test]
    fn cancel_is_answered_and_relayed() {
        let mut p = proxy();
        let t0 = Instant::now();
        p.handle(t0, now_ms(), &invite("INVITE"), false, 1);
        let out = outputs(&mut p);
        let (server, fwd) = out[1].clone();
        let mut ringing = answer(&fwd, 180);
        p.handle(t0, now_ms(), &ringing, false, 0);
        assert_eq!(status(&outputs(&mut p)[0].1), Some(180));
        p.handle(t0, now_ms(), &invite("CANCEL"), false, 1);
        let out = outputs(&mut p);
        assert_eq!(status(&out[0].1), Some(200));
        assert_eq!(out[1].0, server);
        assert!(out[1].1.starts_with(b"CANCEL "));
        let cancel = Message::parse(&out[1].1, false).unwrap();
        assert_eq!(
            cancel.top_via().unwrap().branch,
            Message::parse(&fwd, false)
                .unwrap()
                .top_via()
                .unwrap()
                .branch
        );
        ringing = answer(&fwd, 487);
        p.handle(t0, now_ms(), &ringing, false, 0);
        let out = outputs(&mut p);
        assert!(
            out.iter()
                .any(|(to, b)| to.is_none() && status(b) == Some(487)),
            "{out:?}"
        );
    }

    #[test]
    fn transaction_table_is_bounded() {
        let mut p = proxy();
        let t0 = Instant::now();
        for i in 0..6 {
            let b = String::from_utf8(invite("INVITE"))
                .unwrap()
                .replace("z9hG4bKcaller", &format!("z9hG4bKcaller{i}"))
                .replace("Call-ID: pc", &format!("Call-ID: pc{i}"));
            p.handle(t0, now_ms(), b.as_bytes(), false, 1);
            let out = outputs(&mut p);
            if i < 4 {
                assert_eq!(status(&out[0].1), Some(100), "call {i}");
            } else {
                assert_eq!(status(&out[0].1), Some(503), "call {i}: the table is full");
                assert_eq!(out.len(), 1, "nothing forwarded");
            }
        }
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn a_cancel_before_any_provisional_waits_for_one() {
        let mut p = proxy();
        let t0 = Instant::now();
        p.handle(t0, now_ms(), &invite("INVITE"), false, 1);
        let (server, fwd) = outputs(&mut p)[1].clone();
        p.handle(t0, now_ms(), &invite("CANCEL"), false, 1);
        let out = outputs(&mut p);
        assert_eq!(out.len(), 1, "only the caller's 200: {out:?}");
        assert_eq!(status(&out[0].1), Some(200));
        p.handle(t0, now_ms(), &answer(&fwd, 100), false, 0);
        let out = outputs(&mut p);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, server);
        assert!(
            out[0].1.starts_with(b"CANCEL "),
            "sent once the server said Trying"
        );
    }

    #[test]
    fn a_retransmitted_failure_is_acked_again_and_a_late_2xx_is_not_relayed() {
        let mut p = proxy();
        let t0 = Instant::now();
        p.handle(t0, now_ms(), &invite("INVITE"), false, 1);
        let (_, fwd) = outputs(&mut p)[1].clone();
        let busy = answer(&fwd, 503);
        p.handle(t0, now_ms(), &busy, false, 0);
        let (_, fwd2) = outputs(&mut p)[1].clone();
        p.handle(t0, now_ms(), &busy, false, 0);
        let out = outputs(&mut p);
        assert_eq!(out.len(), 1, "no second failover: {out:?}");
        assert!(out[0].1.starts_with(b"ACK "));
        // The first server answers 200 after all: the caller is on the second one.
        p.handle(t0, now_ms(), &answer(&fwd, 200), false, 0);
        assert!(outputs(&mut p).is_empty());
        p.handle(t0, now_ms(), &answer(&fwd2, 200), false, 0);
        assert_eq!(status(&outputs(&mut p)[0].1), Some(200));
        // Once its answer has lingered, the call is forgotten.
        assert_eq!(p.len(), 1);
        while let Some(at) = p.poll_timeout() {
            p.handle_timeout(at, now_ms());
            outputs(&mut p);
        }
        assert!(p.is_empty() && p.by_branch.is_empty() && p.by_key.is_empty());
    }
}
