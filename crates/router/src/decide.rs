//! What the router does with one request (sans-IO): deposit or retrieval, which server, or
//! which error. Shared by the redirect and proxy modes.

use std::fmt::Write as _;

use std::net::IpAddr;

pub use boxless_core::acl::{Admission, Gate, REFUSALS_PER_SECOND};
use boxless_core::{Numbering, PhoneNumber, Rng, RouterMode, StatusBoard};
use boxless_sip::{Message, Method, parties, write_response};

use crate::policy;

/// The router's decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer with this status.
    Respond {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: &'static str,
        /// Extra header to add.
        extra: Extra,
    },
    /// Send the call to this server; `user` goes in the Contact / Request-URI.
    Route {
        /// Index on the status board.
        server: usize,
        /// Recipient (deposit) or link number (retrieval).
        user: PhoneNumber,
        /// True for a call to a link number.
        retrieval: bool,
        /// Redirect mode: the servers a 302 lists after this one.
        alternates: policy::Alternates,
    },
    /// Nothing to send (ACK, stray responses).
    Absorb,
}

/// A header a response needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// None.
    None,
    /// `Retry-After: N`.
    RetryAfter,
    /// `Retry-After: 1` (a peer over its INVITE rate).
    RetryAfterOne,
    /// `Allow: ...`.
    Allow,
    /// `Unsupported: <the Require/Proxy-Require value>`.
    Unsupported,
}

const ALLOW: &str = "INVITE, ACK, CANCEL, OPTIONS";

/// The router's logic, shared by its socket tasks (read-only; each task has its own RNG).
#[derive(Debug)]
pub struct RouterCore {
    /// Server status.
    pub board: std::sync::Arc<StatusBoard>,
    /// Number completion.
    pub numbering: Numbering,
    /// redirect | proxy
    pub mode: RouterMode,
    /// Status TTL.
    pub ttl_ms: u64,
    /// Retry-After for 503.
    pub retry_after: u32,
    /// Contacts in a 302 for a deposit (1 to 4).
    pub redirect_contacts: u32,
    /// The trust boundary and the flood guard.
    pub gate: Gate,
}

impl RouterCore {
    /// The trust boundary: only trusted peers reach the decision, each within its INVITE
    /// rate; responses are taken only from trusted peers and our own servers, and in proxy
    /// mode our servers' in-dialog requests too (their BYE through a Record-Route).
    pub fn admit(&self, msg: &Message<'_>, src: IpAddr, now_ms: u64) -> Admission {
        let from_server = || self.board.slots.iter().any(|s| s.sip.ip() == src);
        match msg.method() {
            None if from_server() => Admission::Pass,
            Some(_) if self.mode == RouterMode::Proxy && from_server() => Admission::Pass,
            None => self.gate.response(src),
            Some(m) => self
                .gate
                .request(src, m == Method::Ack, m == Method::Invite, now_ms),
        }
    }

    /// The verdict for a message the gate did not pass.
    pub fn refuse(a: Admission) -> Verdict {
        match a {
            Admission::Forbidden => respond(403, "Forbidden"),
            Admission::Flood => Verdict::Respond {
                code: 503,
                reason: "Service Unavailable",
                extra: Extra::RetryAfterOne,
            },
            Admission::Pass | Admission::Drop => Verdict::Absorb,
        }
    }

    /// Decides what to do with a parsed request (responses are the proxy's business).
    pub fn decide(&self, msg: &Message<'_>, now_ms: u64, rng: &mut Rng) -> Verdict {
        let Some(method) = msg.method() else {
            return Verdict::Absorb;
        };
        if let Some(d) = msg.defect {
            // An ACK is never answered (RFC 3261 §17.2.1).
            if method == Method::Ack {
                return Verdict::Absorb;
            }
            return respond(d.code, d.reason);
        }
        // The router answers every request but INVITE itself, as a UAS: it supports no
        // extension, so any Require or Proxy-Require is refused (RFC 3261 §8.2.2.3).
        let answers_itself = !matches!(method, Method::Invite | Method::Ack | Method::Cancel);
        if answers_itself
            && (msg.header("require").is_some() || msg.header("proxy-require").is_some())
        {
            return Verdict::Respond {
                code: 420,
                reason: "Bad Extension",
                extra: Extra::Unsupported,
            };
        }
        match method {
            Method::Invite => self.invite(msg, now_ms, rng),
            Method::Ack => Verdict::Absorb,
            Method::Options => Verdict::Respond {
                code: 200,
                reason: "OK",
                extra: Extra::Allow,
            },
            Method::Cancel | Method::Bye | Method::Update => {
                respond(481, "Call/Transaction Does Not Exist")
            }
            Method::Register | Method::Info => Verdict::Respond {
                code: 405,
                reason: "Method Not Allowed",
                extra: Extra::Allow,
            },
            Method::Other(_) => respond(501, "Not Implemented"),
        }
    }

    fn invite(&self, msg: &Message<'_>, now_ms: u64, rng: &mut Rng) -> Verdict {
        let proxy = self.mode == RouterMode::Proxy;
        if proxy && msg.max_forwards == Some(0) {
            return respond(483, "Too Many Hops");
        }
        let require = if proxy {
            msg.header("proxy-require")
        } else {
            msg.header("require").or(msg.header("proxy-require"))
        };
        if require.is_some() {
            return Verdict::Respond {
                code: 420,
                reason: "Bad Extension",
                extra: Extra::Unsupported,
            };
        }
        let owner = std::cell::Cell::new(None);
        let target = parties::target(
            msg,
            |u| self.numbering.normalize(u),
            |n| {
                owner.set(self.board.owner_of(n));
                owner.get().is_some()
            },
        );
        let recipient = match target {
            None => return respond(404, "Not Found"),
            Some(parties::Target::Deposit(r)) => r,
            Some(parties::Target::Retrieval(link)) => {
                // Only the owner holds the message, or the server that took it over:
                // never another. Fresh, up, and answering this router's probes: else
                // the caller hears 480 now rather than a proxy timeout later.
                let Some(owner) = owner.get() else {
                    return respond(404, "Not Found");
                };
                let Some(server) = self.board.serving(owner, now_ms, self.ttl_ms) else {
                    return Verdict::Respond {
                        code: 480,
                        reason: "Temporarily Unavailable",
                        extra: Extra::RetryAfter,
                    };
                };
                return Verdict::Route {
                    server,
                    user: link,
                    retrieval: true,
                    alternates: policy::Alternates::default(),
                };
            }
        };
        let at = self.board.status_time(now_ms);
        match policy::pick(&self.board, at, self.ttl_ms, rng) {
            Some(server) => Verdict::Route {
                server,
                user: recipient,
                retrieval: false,
                // The proxy fails over by itself; a 302 lets the caller do it.
                alternates: if proxy {
                    policy::Alternates::default()
                } else {
                    policy::alternates(
                        &self.board,
                        at,
                        self.ttl_ms,
                        server,
                        self.redirect_contacts.saturating_sub(1) as usize,
                    )
                },
            },
            None => Verdict::Respond {
                code: 503,
                reason: "Service Unavailable",
                extra: Extra::RetryAfter,
            },
        }
    }

    /// Writes the response a verdict calls for (redirect mode writes 302 for a route).
    /// Returns false when nothing is to be sent.
    pub fn write(
        &self,
        msg: &Message<'_>,
        v: Verdict,
        scratch: &mut String,
        out: &mut Vec<u8>,
    ) -> bool {
        scratch.clear();
        let tag = boxless_sip::stateless_tag(msg);
        let (code, reason) = match v {
            Verdict::Absorb => return false,
            Verdict::Route {
                server,
                user,
                alternates,
                ..
            } => {
                // A caller on TLS is sent to the servers' TLS listeners (RFC 5630), one
                // that has none to its plain address.
                let tls = msg
                    .top_via()
                    .is_some_and(|v| v.transport.eq_ignore_ascii_case("TLS"));
                let contact = |scratch: &mut String, i: usize| {
                    let slot = &self.board.slots[i];
                    // Writing to a String cannot fail.
                    let _ = match slot.sip_tls.filter(|_| tls) {
                        Some(t) => write!(scratch, "<sip:{user}@{t};transport=tls>"),
                        None => write!(scratch, "<sip:{user}@{}>", slot.sip),
                    };
                };
                scratch.push_str("Contact: ");
                contact(scratch, server);
                // Alternatives in q-order (RFC 3261 §8.1.3.4): 1.0 for the chosen one.
                if !alternates.as_slice().is_empty() {
                    scratch.push_str(";q=1.0");
                }
                for (k, &i) in alternates.as_slice().iter().enumerate() {
                    scratch.push_str(", ");
                    contact(scratch, i as usize);
                    let _ = write!(scratch, ";q=0.{}", 9 - k);
                }
                scratch.push_str("\r\n");
                (302, "Moved Temporarily")
            }
            Verdict::Respond {
                code,
                reason,
                extra,
            } => {
                match extra {
                    Extra::None => {}
                    Extra::RetryAfter => {
                        let _ = write!(scratch, "Retry-After: {}\r\n", self.retry_after);
                    }
                    Extra::RetryAfterOne => scratch.push_str("Retry-After: 1\r\n"),
                    Extra::Allow => {
                        let _ = write!(scratch, "Allow: {ALLOW}\r\n");
                    }
                    Extra::Unsupported => {
                        let req = msg
                            .header("proxy-require")
                            .or(msg.header("require"))
                            .unwrap_or("");
                        let _ = write!(scratch, "Unsupported: {req}\r\n");
                    }
                }
                (code, reason)
            }
        };
        let tag_hex = TagHex(tag);
        let to_tag: Option<&dyn std::fmt::Display> =
            if code >= 200 { Some(&tag_hex) } else { None };
        write_response(
            out,
            msg,
            code,
            reason,
            to_tag,
            None,
            scratch.as_bytes(),
            None,
        );
        true
    }
}

struct TagHex(u64);

impl std::fmt::Display for TagHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

fn respond(code: u16, reason: &'static str) -> Verdict {
    Verdict::Respond {
        code,
        reason,
        extra: Extra::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::{LinkPool, ServerSlot, ServerState, StatusView};
    use std::sync::Arc;

    fn core(mode: RouterMode) -> RouterCore {
        let slots = ["+18005550100-+18005550149", "+18005550150-+18005550199"]
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = ServerSlot::new(
                    &format!("ms{}", i + 1),
                    ([127, 0, 0, 1], 5070 + 2 * i as u16).into(),
                    LinkPool::parse(&[*p]).unwrap(),
                    10,
                )
                // ms1 has a TLS listener, ms2 none.
                .with_tls((i == 0).then(|| ([127, 0, 0, 1], 5061).into()));
                s.publish(StatusView::up(10, 1000));
                s
            })
            .collect();
        RouterCore {
            board: Arc::new(StatusBoard::new(slots)),
            numbering: Numbering::new("1").unwrap(),
            mode,
            ttl_ms: 3000,
            retry_after: 30,
            redirect_contacts: 2,
            gate: Gate::new(boxless_core::PeerFilter::loopback(), 3, 1),
        }
    }

    fn invite(ruri_user: &str, extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:{ruri_user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa\r\nFrom: <sip:+15551230001@h>;tag=1\r\nTo: <sip:{ruri_user}@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_caller_on_tls_is_redirected_to_the_servers_tls_listeners() {
        let c = core(RouterMode::Redirect);
        let b = String::from_utf8(invite(
            "+15551230002",
            "Diversion: <sip:+15551230002@h>\r\n",
        ))
        .unwrap()
        .replace("SIP/2.0/UDP 127.0.0.1:9", "SIP/2.0/TLS 127.0.0.1:9");
        let m = Message::parse(b.as_bytes(), false).unwrap();
        let mut out = Vec::new();
        let v = decide(&c, b.as_bytes());
        assert!(c.write(&m, v, &mut String::new(), &mut out));
        let r = Message::parse(&out, false).unwrap();
        let contacts: Vec<_> = r.header_values("contact").collect();
        assert_eq!(contacts.len(), 2);
        assert!(
            contacts.contains(&"<sip:+15551230002@127.0.0.1:5061;transport=tls>;q=1.0")
                || contacts.contains(&"<sip:+15551230002@127.0.0.1:5061;transport=tls>;q=0.9"),
            "{contacts:?}"
        );
        assert!(
            contacts.iter().any(|c| c.contains("127.0.0.1:5072>")),
            "a server without TLS keeps its plain address: {contacts:?}"
        );
        // The same call over UDP: plain addresses only.
        let udp = invite("+15551230002", "Diversion: <sip:+15551230002@h>\r\n");
        let m = Message::parse(&udp, false).unwrap();
        let v = decide(&c, &udp);
        assert!(c.write(&m, v, &mut String::new(), &mut out));
        assert!(!String::from_utf8_lossy(&out).contains("transport=tls"));
    }

    fn decide(c: &RouterCore, b: &[u8]) -> Verdict {
        c.decide(
            &Message::parse(b, false).unwrap(),
            2000,
            &mut Rng::seeded(1),
        )
    }

    #[test]
    fn deposit_routes_national_recipient_and_writes_302() {
        let c = core(RouterMode::Redirect);
        let b = invite("5551230002", "");
        let v = decide(&c, &b);
        let Verdict::Route {
            user,
            retrieval: false,
            ..
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(user.to_string(), "+15551230002");
        let mut out = Vec::new();
        assert!(c.write(
            &Message::parse(&b, false).unwrap(),
            v,
            &mut String::new(),
            &mut out
        ));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("SIP/2.0 302 Moved Temporarily\r\n"));
        // The chosen server first, the other one after it in q-order.
        let Verdict::Route { server, .. } = v else {
            unreachable!()
        };
        let (first, second) = (5070 + 2 * server, 5072 - 2 * server);
        assert!(
            s.contains(&format!(
                "Contact: <sip:+15551230002@127.0.0.1:{first}>;q=1.0, <sip:+15551230002@127.0.0.1:{second}>;q=0.9\r\n"
            )),
            "{s}"
        );
        // One Contact when the other server is down, or when configured so.
        let mut down = c.board.slots[1 - server].view();
        down.state = ServerState::Down;
        c.board.slots[1 - server].publish(down);
        let mut out = Vec::new();
        let v = decide(&c, &b);
        c.write(
            &Message::parse(&b, false).unwrap(),
            v,
            &mut String::new(),
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains(&format!(
                "Contact: <sip:+15551230002@127.0.0.1:{first}>\r\n"
            )),
            "{s}"
        );
        let one = RouterCore {
            redirect_contacts: 1,
            ..core(RouterMode::Redirect)
        };
        assert_eq!(one.redirect_contacts, 1);
        let Verdict::Route { alternates, .. } = decide(&one, &b) else {
            unreachable!()
        };
        assert!(alternates.as_slice().is_empty());
    }

    #[test]
    fn link_numbers_go_to_their_owner_or_whoever_took_it_over() {
        let c = core(RouterMode::Redirect);
        assert!(matches!(
            decide(&c, &invite("+18005550160", "")),
            Verdict::Route {
                server: 1,
                retrieval: true,
                ..
            }
        ));
        // Fresh and up by its status, but dead to this router's probes: 480.
        c.board.slots[1].set_probe_down(true);
        assert!(matches!(
            decide(&c, &invite("+18005550160", "")),
            Verdict::Respond { code: 480, .. }
        ));
        c.board.slots[1].set_probe_down(false);
        let mut v = c.board.slots[1].view();
        v.state = ServerState::Down;
        c.board.slots[1].publish(v);
        assert!(matches!(
            decide(&c, &invite("+18005550160", "")),
            Verdict::Respond { code: 480, .. }
        ));
        // Taken over by ms1: its link numbers go there, until ms2 serves them again.
        c.board.slots[0].set_serves(true, 0b10);
        assert!(matches!(
            decide(&c, &invite("+18005550160", "")),
            Verdict::Route {
                server: 0,
                retrieval: true,
                ..
            }
        ));
        c.board.slots[1].publish(StatusView::up(10, 1000));
        c.board.slots[1].set_serves(false, 0);
        assert!(
            matches!(
                decide(&c, &invite("+18005550160", "")),
                Verdict::Route { server: 0, .. }
            ),
            "ms2 back but catching up"
        );
        c.board.slots[1].set_serves(true, 0);
        c.board.slots[0].set_serves(true, 0);
        assert!(matches!(
            decide(&c, &invite("+18005550160", "")),
            Verdict::Route { server: 1, .. }
        ));
        let mut v = c.board.slots[1].view();
        v.state = ServerState::Down;
        c.board.slots[1].publish(v);
        // A diverted call to a link number is a deposit for whoever was diverted.
        let d = decide(
            &c,
            &invite("+18005550160", "Diversion: <sip:+15551230002@h>\r\n"),
        );
        assert!(
            matches!(
                d,
                Verdict::Route {
                    server: 0,
                    retrieval: false,
                    ..
                }
            ),
            "{d:?}"
        );
    }

    #[test]
    fn only_trusted_peers_pass_and_each_within_its_rate() {
        let c = core(RouterMode::Redirect);
        let b = invite("+15551230002", "");
        let m = Message::parse(&b, false).unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let peer: IpAddr = "127.0.0.3".parse().unwrap();
        assert_eq!(c.admit(&m, stranger, 1000), Admission::Forbidden);
        let mut out = Vec::new();
        assert!(c.write(
            &m,
            RouterCore::refuse(Admission::Forbidden),
            &mut String::new(),
            &mut out
        ));
        assert!(out.starts_with(b"SIP/2.0 403 Forbidden\r\n"));
        // Refusals to one source are bounded per second; the rest are dropped unanswered.
        let refused = (0..50)
            .filter(|_| c.admit(&m, stranger, 1000) == Admission::Forbidden)
            .count();
        assert_eq!(refused, REFUSALS_PER_SECOND as usize - 1);
        // An untrusted ACK or response is never answered.
        let ack = String::from_utf8(b.clone())
            .unwrap()
            .replacen("INVITE", "ACK", 2);
        let ack = Message::parse(ack.as_bytes(), false).unwrap();
        assert_eq!(
            c.admit(&ack, "192.0.2.10".parse().unwrap(), 1000),
            Admission::Drop
        );
        let resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let resp = Message::parse(resp, false).unwrap();
        assert_eq!(c.admit(&resp, stranger, 1000), Admission::Drop);
        assert_eq!(
            c.admit(&resp, "127.0.0.1".parse().unwrap(), 1000),
            Admission::Pass
        );
        // A trusted peer: three INVITEs a second (this core's limit), then 503.
        assert!((0..3).all(|_| c.admit(&m, peer, 5000) == Admission::Pass));
        assert_eq!(c.admit(&m, peer, 5999), Admission::Flood);
        let mut out = Vec::new();
        c.write(
            &m,
            RouterCore::refuse(Admission::Flood),
            &mut String::new(),
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("SIP/2.0 503 ") && s.contains("Retry-After: 1\r\n"),
            "{s}"
        );
        assert_eq!(c.admit(&m, peer, 6000), Admission::Pass);
    }

    #[test]
    fn errors_and_modes() {
        let c = core(RouterMode::Redirect);
        assert!(matches!(
            decide(&c, &invite("alice", "")),
            Verdict::Respond { code: 404, .. }
        ));
        assert!(matches!(
            decide(&c, &invite("+15551230002", "Require: foo\r\n")),
            Verdict::Respond { code: 420, .. }
        ));
        // An UPDATE (or BYE) that belongs to no dialog the router knows: 481, in both modes.
        let update = String::from_utf8(invite("+15551230002", ""))
            .unwrap()
            .replace("INVITE", "UPDATE");
        for mode in [RouterMode::Redirect, RouterMode::Proxy] {
            assert!(matches!(
                decide(&core(mode), update.as_bytes()),
                Verdict::Respond { code: 481, .. }
            ));
        }
        let zero = invite("+15551230002", "");
        let zero = String::from_utf8(zero)
            .unwrap()
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert!(matches!(decide(&c, zero.as_bytes()), Verdict::Route { .. }));
        assert!(matches!(
            decide(&core(RouterMode::Proxy), zero.as_bytes()),
            Verdict::Respond { code: 483, .. }
        ));
        for s in &c.board.slots {
            s.call_started();
            let mut v = s.view();
            v.active = 10;
            s.publish(v);
        }
        assert!(matches!(
            decide(&c, &invite("+15551230002", "")),
            Verdict::Respond {
                code: 503,
                extra: Extra::RetryAfter,
                ..
            }
        ));
    }
}
