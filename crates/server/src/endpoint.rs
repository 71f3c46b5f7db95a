//! What the server does with one SIP message (sans-IO): answer it itself, hand it to a
//! running call, admit a new call, or drop it. The socket tasks parse each datagram,
//! ask [`Endpoint::handle`] and act on the [`Dispatch`]; nothing here reads a clock,
//! touches a socket or waits on the store, so one slow disk read never holds up another
//! call's SIP. The router's `decide` module has the same shape.
//!
//! Order (ARCHITECTURE.md, "Trust boundary"): the trust boundary first (strangers reach
//! nothing, not even a parse error), then defects, then the calls in progress (matched by
//! dialog), then the server's own answers and admission.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;

use boxless_core::{Admission, Gate};
use boxless_sip::{DialogId, Message, Method, NameAddr, response_target};

use crate::admission::{self, Admitted, Context};

/// What the server answers to OPTIONS: its methods and what it supports (as [`crate::leg::ALLOW`]).
pub(crate) const CAPABILITIES: &str = "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO\r\n\
Supported: timer\r\nAccept: application/sdp\r\n";

/// What to do with one message.
#[derive(Debug, PartialEq)]
pub enum Dispatch<H> {
    /// Answer it statelessly.
    Reply(Reply),
    /// It belongs to a call in progress: hand it to the call's task.
    ToCall {
        /// The call's handle.
        call: H,
        /// Where a response to it goes (RFC 3261 §18.2.2).
        reply_to: SocketAddr,
    },
    /// A new call the server takes: the driver binds its media and starts its task, which
    /// loads what the call needs (the recipient's language, the link's messages) itself.
    Admit {
        /// What admission found.
        admitted: Admitted,
        /// Where responses to the INVITE go.
        reply_to: SocketAddr,
    },
    /// Nothing to send.
    Drop(Dropped),
}

/// A stateless answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Where it goes.
    pub to: SocketAddr,
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// Header lines, each ending in CRLF.
    pub extra: Cow<'static, str>,
    /// Why the request was refused, for `boxless_sip_refused_total{reason}`; `None` for an
    /// ordinary answer (OPTIONS, a parse error, admission's refusals).
    pub refused: Option<&'static str>,
}

/// Why a message gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A request with no Via to answer on (`boxless_sip_dropped_total{reason="no_via"}`).
    NoVia,
    /// From outside the trust boundary, and not answered: an ACK, or past the budget of
    /// `403`s (`boxless_sip_refused_total{reason="untrusted"}`).
    Untrusted,
    /// An ACK or a response carrying a call's Call-ID but not its dialog
    /// (`boxless_sip_refused_total{reason="no_dialog"}`).
    NotInDialog,
    /// Nothing to do and nothing to count: an ACK or a response for no call, an untrusted
    /// or malformed response.
    Absorbed,
}

/// The server's SIP endpoint: the trust boundary and the calls in progress, by Call-ID.
/// `H` is how the driver reaches a call's task (a channel's sender); the table holds at
/// most what admission lets in (`capacity` calls), so a stranger cannot grow it.
#[derive(Debug)]
pub struct Endpoint<H> {
    gate: Gate,
    calls: HashMap<String, Route<H>>,
}

#[derive(Debug)]
struct Route<H> {
    /// What an in-dialog message must carry to reach the call ([`DialogId::matches`]).
    id: DialogId,
    call: H,
}

impl<H: Clone> Endpoint<H> {
    /// An endpoint behind `gate`, with no call.
    pub fn new(gate: Gate) -> Endpoint<H> {
        Endpoint {
            gate,
            calls: HashMap::new(),
        }
    }

    /// The trust boundary.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Decides on one parsed message from `src` at `now_ms`; `server` is the server's
    /// state as admission sees it.
    pub fn handle(
        &self,
        now_ms: u64,
        src: SocketAddr,
        msg: &Message<'_>,
        server: &Context<'_>,
    ) -> Dispatch<H> {
        let Some(method) = msg.method() else {
            return self.response(src, msg);
        };
        let Some(via) = msg.reply_via() else {
            return Dispatch::Drop(Dropped::NoVia);
        };
        let reply_to = response_target(&via, src);
        let initial_invite =
            method == Method::Invite && NameAddr::parse(msg.to).and_then(|n| n.tag()).is_none();
        match self
            .gate
            .request(src.ip(), method == Method::Ack, initial_invite, now_ms)
        {
            Admission::Pass => {}
            Admission::Forbidden => {
                return reply(reply_to, 403, "Forbidden", "", Some("untrusted"));
            }
            Admission::Drop => return Dispatch::Drop(Dropped::Untrusted),
            Admission::Flood => {
                return reply(
                    reply_to,
                    503,
                    "Service Unavailable",
                    "Retry-After: 1\r\n",
                    Some("flood"),
                );
            }
        }
        if let Some(d) = msg.defect {
            // An ACK is never answered (RFC 3261 §17.2.1).
            if method == Method::Ack {
                return Dispatch::Drop(Dropped::Absorbed);
            }
            return reply(reply_to, d.code, d.reason, "", None);
        }
        if let Some(route) = self.calls.get(msg.call_id) {
            if route.id.matches(msg) {
                let call = route.call.clone();
                return Dispatch::ToCall { call, reply_to };
            }
            // The call's Call-ID but not its dialog: it changes nothing.
            return match method {
                Method::Ack => Dispatch::Drop(Dropped::NotInDialog),
                Method::Invite => reply(reply_to, 482, "Loop Detected", "", Some("no_dialog")),
                _ => no_such_call(reply_to, Some("no_dialog")),
            };
        }
        match method {
            Method::Invite => match admission::admit(msg, server) {
                Ok(admitted) => Dispatch::Admit { admitted, reply_to },
                Err(r) => reply(reply_to, r.code, r.reason, r.extra, None),
            },
            Method::Ack => Dispatch::Drop(Dropped::Absorbed),
            Method::Options => reply(reply_to, 200, "OK", CAPABILITIES, None),
            Method::Bye | Method::Cancel | Method::Update | Method::Info => {
                no_such_call(reply_to, None)
            }
            Method::Register => reply(reply_to, 405, "Method Not Allowed", crate::leg::ALLOW, None),
            Method::Other(_) => reply(reply_to, 501, "Not Implemented", "", None),
        }
    }

    /// A response belongs to a call (to our BYE, UPDATE) or to nobody; only trusted
    /// peers' are read.
    fn response(&self, src: SocketAddr, msg: &Message<'_>) -> Dispatch<H> {
        if msg.defect.is_some() || self.gate.response(src.ip()) != Admission::Pass {
            return Dispatch::Drop(Dropped::Absorbed);
        }
        match self.calls.get(msg.call_id) {
            Some(route) if route.id.matches(msg) => Dispatch::ToCall {
                call: route.call.clone(),
                reply_to: src,
            },
            Some(_) => Dispatch::Drop(Dropped::NotInDialog),
            None => Dispatch::Drop(Dropped::Absorbed),
        }
    }

    /// Adds a call the driver started for an [`Dispatch::Admit`]; false (and nothing
    /// changes) when a call with that Call-ID is already in progress.
    pub fn insert(&mut self, call_id: &str, id: DialogId, call: H) -> bool {
        if self.calls.contains_key(call_id) {
            return false;
        }
        self.calls.insert(call_id.to_string(), Route { id, call });
        true
    }

    /// Forgets a call that ended.
    pub fn remove(&mut self, call_id: &str) {
        self.calls.remove(call_id);
    }

    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }
}

fn reply<H>(
    to: SocketAddr,
    code: u16,
    reason: &'static str,
    extra: impl Into<Cow<'static, str>>,
    refused: Option<&'static str>,
) -> Dispatch<H> {
    Dispatch::Reply(Reply {
        to,
        code,
        reason,
        extra: extra.into(),
        refused,
    })
}

fn no_such_call<H>(to: SocketAddr, refused: Option<&'static str>) -> Dispatch<H> {
    reply(to, 481, "Call/Transaction Does Not Exist", "", refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::{LinkPool, Numbering, PeerFilter, PhoneNumber};
    use boxless_sip::parties::Target;
    use boxless_sip::{Dialog, Local};

    const PEER: &str = "127.0.0.1:9000";
    const STRANGER: &str = "192.0.2.7:5060";

    struct Fixture {
        ep: Endpoint<u32>,
        numbering: Numbering,
        pool: LinkPool,
        draining: bool,
        active: u32,
    }

    impl Fixture {
        /// Trusts loopback; two new INVITEs a second from each peer.
        fn new() -> Fixture {
            Fixture {
                ep: Endpoint::new(Gate::new(PeerFilter::loopback(), 2, 7)),
                numbering: Numbering::new("1").unwrap(),
                pool: LinkPool::parse(&["+15550001000-+15550001099"]).unwrap(),
                draining: false,
                active: 0,
            }
        }

        fn handle_from(&self, now_ms: u64, src: &str, bytes: &[u8]) -> Dispatch<u32> {
            let ctx = Context {
                draining: self.draining,
                active: self.active,
                capacity: 10,
                numbering: &self.numbering,
                links: crate::admission::Links::Pool(&self.pool),
                min_se: 90,
            };
            let msg = Message::parse(bytes, false).unwrap();
            self.ep.handle(now_ms, src.parse().unwrap(), &msg, &ctx)
        }

        fn handle(&self, bytes: &[u8]) -> Dispatch<u32> {
            self.handle_from(1_000, PEER, bytes)
        }

        /// Starts call `n` from `invite` as the driver does for an [`Dispatch::Admit`].
        fn start(&mut self, invite: &[u8], n: u32) {
            let call_id = Message::parse(invite, false).unwrap().call_id.to_string();
            assert!(self.ep.insert(&call_id, dialog_of(invite), n));
        }
    }

    fn request(method: &str, ruri: &str, to_tag: &str, extra: &str) -> Vec<u8> {
        format!(
            "{method} sip:{ruri}@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bK{method}\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: <sip:{ruri}@127.0.0.1>{to_tag}\r\nCall-ID: call-1\r\n\
CSeq: 1 {method}\r\nContact: <sip:+15551230001@127.0.0.1:9000>\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn invite(ruri: &str) -> Vec<u8> {
        request("INVITE", ruri, "", "")
    }

    fn in_dialog(method: &str) -> Vec<u8> {
        request(method, "+15551230002", ";tag=srv", "")
    }

    fn code(d: &Dispatch<u32>) -> Option<(u16, Option<&'static str>)> {
        match d {
            Dispatch::Reply(r) => Some((r.code, r.refused)),
            _ => None,
        }
    }

    fn response(code: u16, branch: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
From: <sip:+15551230002@127.0.0.1>;tag=srv\r\nTo: <sip:+15551230001@127.0.0.1>;tag=caller\r\nCall-ID: call-1\r\n\
CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn strangers_get_one_403_an_ack_none_and_past_the_budget_nothing() {
        let f = Fixture::new();
        let d = f.handle_from(1_000, STRANGER, &invite("+15551230002"));
        assert_eq!(code(&d), Some((403, Some("untrusted"))));
        // Replies go where RFC 3261 §18.2.2 says: the source IP, the Via's port.
        let Dispatch::Reply(r) = d else { panic!() };
        assert_eq!(r.to, "192.0.2.7:9000".parse().unwrap());
        assert_eq!(
            f.handle_from(1_000, STRANGER, &in_dialog("ACK")),
            Dispatch::Drop(Dropped::Untrusted)
        );
        // Their responses are not even read.
        assert_eq!(
            f.handle_from(1_000, STRANGER, &response(200, "z9hG4bKsrv.1")),
            Dispatch::Drop(Dropped::Absorbed)
        );
        // A stranger's flood of requests: ten 403s a second, then silence.
        let refused = (0..50)
            .filter(|_| code(&f.handle_from(2_000, STRANGER, &in_dialog("BYE"))).is_some())
            .count();
        assert_eq!(refused, boxless_core::acl::REFUSALS_PER_SECOND as usize);
        assert_eq!(
            f.handle_from(2_000, STRANGER, &in_dialog("OPTIONS")),
            Dispatch::Drop(Dropped::Untrusted)
        );
    }

    #[test]
    fn a_trusted_peer_over_its_invite_rate_gets_503_with_retry_after() {
        let f = Fixture::new();
        for _ in 0..2 {
            assert!(matches!(
                f.handle(&invite("+15551230002")),
                Dispatch::Admit { .. }
            ));
        }
        let d = f.handle(&invite("+15551230002"));
        assert_eq!(code(&d), Some((503, Some("flood"))));
        let Dispatch::Reply(r) = d else { panic!() };
        assert_eq!(r.extra, "Retry-After: 1\r\n");
        // Only new INVITEs count: OPTIONS still gets its answer, and the next second has
        // room again.
        assert_eq!(code(&f.handle(&in_dialog("OPTIONS"))), Some((200, None)));
        assert!(matches!(
            f.handle_from(2_000, PEER, &invite("+15551230002")),
            Dispatch::Admit { .. }
        ));
    }

    #[test]
    fn defects_are_answered_with_their_code_except_on_an_ack() {
        let f = Fixture::new();
        let bad = String::from_utf8(in_dialog("OPTIONS"))
            .unwrap()
            .replace("SIP/2.0\r\n", "SIP/7.0\r\n");
        assert_eq!(code(&f.handle(bad.as_bytes())), Some((505, None)));
        let bad_ack = String::from_utf8(in_dialog("ACK"))
            .unwrap()
            .replace("SIP/2.0\r\n", "SIP/7.0\r\n");
        assert_eq!(
            f.handle(bad_ack.as_bytes()),
            Dispatch::Drop(Dropped::Absorbed)
        );
        let no_via = String::from_utf8(in_dialog("OPTIONS")).unwrap().replace(
            "Via: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bKOPTIONS\r\n",
            "",
        );
        assert_eq!(f.handle(no_via.as_bytes()), Dispatch::Drop(Dropped::NoVia));
    }

    #[test]
    fn each_method_without_a_call() {
        let f = Fixture::new();
        let d = f.handle(&in_dialog("OPTIONS"));
        let Dispatch::Reply(r) = &d else { panic!() };
        assert_eq!((r.code, r.extra.as_ref()), (200, CAPABILITIES));
        assert!(CAPABILITIES.starts_with(crate::leg::ALLOW));
        for m in ["BYE", "CANCEL", "UPDATE", "INFO"] {
            assert_eq!(code(&f.handle(&in_dialog(m))), Some((481, None)), "{m}");
        }
        let Dispatch::Reply(r) = f.handle(&in_dialog("REGISTER")) else {
            panic!()
        };
        assert_eq!((r.code, r.extra.as_ref()), (405, crate::leg::ALLOW));
        assert_eq!(code(&f.handle(&in_dialog("PUBLISH"))), Some((501, None)));
        assert_eq!(
            f.handle(&in_dialog("ACK")),
            Dispatch::Drop(Dropped::Absorbed)
        );
        // A response for no call: nothing.
        assert_eq!(
            f.handle(&response(200, "z9hG4bKsrv.1")),
            Dispatch::Drop(Dropped::Absorbed)
        );
    }

    #[test]
    fn invites_are_admitted_as_deposits_or_retrievals_or_refused_by_admission() {
        let mut f = Fixture::new();
        let Dispatch::Admit { admitted, reply_to } = f.handle(&invite("+15551230002")) else {
            panic!()
        };
        let recipient = PhoneNumber::parse_e164("+15551230002").unwrap();
        assert_eq!(admitted.target, Target::Deposit(recipient));
        assert_eq!(reply_to, PEER.parse().unwrap());
        let Dispatch::Admit { admitted, .. } = f.handle_from(2_000, PEER, &invite("5550001007"))
        else {
            panic!()
        };
        let link = PhoneNumber::parse_e164("+15550001007").unwrap();
        assert_eq!(admitted.target, Target::Retrieval(link));
        // Admission's refusals are answered as they are: full, draining, unknown number.
        f.active = 10;
        assert_eq!(
            code(&f.handle_from(3_000, PEER, &invite("+15551230002"))),
            Some((503, None))
        );
        f.active = 0;
        f.draining = true;
        assert_eq!(
            code(&f.handle_from(4_000, PEER, &invite("+15551230002"))),
            Some((503, None))
        );
        f.draining = false;
        assert_eq!(
            code(&f.handle_from(5_000, PEER, &invite("alice"))),
            Some((404, None))
        );
    }

    #[test]
    fn a_call_s_own_messages_reach_it_and_others_with_its_call_id_change_nothing() {
        let mut f = Fixture::new();
        let inv = invite("+15551230002");
        f.start(&inv, 7);
        assert_eq!(f.ep.calls(), 1);
        let to_call = |d: Dispatch<u32>| matches!(d, Dispatch::ToCall { call: 7, .. });
        // The INVITE's retransmission (same branch, no To-tag), its CANCEL, and in-dialog
        // requests with both tags.
        assert!(to_call(f.handle(&inv)));
        // CANCEL carries the INVITE's branch.
        let cancel = String::from_utf8(request("CANCEL", "+15551230002", "", ""))
            .unwrap()
            .replace("branch=z9hG4bKCANCEL", "branch=z9hG4bKINVITE");
        assert!(to_call(f.handle(cancel.as_bytes())));
        for m in ["ACK", "BYE", "UPDATE", "INFO", "INVITE"] {
            assert!(to_call(f.handle(&in_dialog(m))), "{m}");
        }
        // Responses to our requests (branch prefix ours), from a trusted peer.
        assert!(to_call(f.handle(&response(200, "z9hG4bKsrv.2"))));
        assert_eq!(
            f.handle(&response(200, "z9hG4bKother")),
            Dispatch::Drop(Dropped::NotInDialog)
        );
        // The Call-ID with a wrong tag: 481, an INVITE 482, an ACK nothing; all counted.
        let forged = |m: &str| request(m, "+15551230002", ";tag=forged", "");
        assert_eq!(
            code(&f.handle(&forged("BYE"))),
            Some((481, Some("no_dialog")))
        );
        assert_eq!(
            code(&f.handle(&forged("INVITE"))),
            Some((482, Some("no_dialog")))
        );
        assert_eq!(
            f.handle(&forged("ACK")),
            Dispatch::Drop(Dropped::NotInDialog)
        );
        // A second call with the same Call-ID is not inserted; once the call ends its
        // messages get the answers of no call.
        assert!(!f.ep.insert("call-1", dialog_of(&inv), 8));
        f.ep.remove("call-1");
        assert_eq!(f.ep.calls(), 0);
        assert_eq!(code(&f.handle(&in_dialog("BYE"))), Some((481, None)));
    }

    /// The dialog the server makes for `invite`: its To-tag `srv`, its branches
    /// `z9hG4bKsrv...`.
    fn dialog_of(invite: &[u8]) -> DialogId {
        let msg = Message::parse(invite, false).unwrap();
        let local = Local {
            tag: "srv".into(),
            contact: "sip:+15551230002@127.0.0.1:5070".into(),
            transport: "UDP",
            sent_by: "127.0.0.1:5070".into(),
            branch_prefix: "z9hG4bKsrv".into(),
        };
        Dialog::uas(&msg, local).unwrap().id().clone()
    }
}
