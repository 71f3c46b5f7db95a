//! Whether a server takes a new INVITE, and as what: sans-IO, decided from the message and a
//! snapshot of the server's state. The driver then does what needs I/O (loading a link's
//! messages, binding an RTP port) and answers with the refusal when there is one.

use boxless_core::{LinkPool, Numbering, PhoneNumber, StatusBoard};
use boxless_media::{Negotiated, negotiate};
use boxless_sip::Message;
use boxless_sip::hdr::{NameAddr, Uri, split_commas};
use boxless_sip::parties::{self, Target};
use boxless_sip::session::{self, Negotiation, SessionTimer};

/// The extensions we support (`Require` may name them).
const SUPPORTED: &[&str] = &["timer"];

/// The server's state as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// SIGTERM: no new calls.
    pub draining: bool,
    /// Calls in progress.
    pub active: u32,
    /// Calls it may hold.
    pub capacity: u32,
    /// How users become numbers.
    pub numbering: &'a Numbering,
    /// The link numbers it answers.
    pub links: Links<'a>,
    /// Our RFC 4028 `Min-SE`.
    pub min_se: u32,
}

/// The link numbers a server answers.
#[derive(Debug, Clone, Copy)]
pub enum Links<'a> {
    /// These (tests, and a server that never takes another over).
    Pool(&'a LinkPool),
    /// Slot `me`'s, and those of the servers it took over (docs/high-availability.md).
    Board {
        /// The status board.
        board: &'a StatusBoard,
        /// This server's slot.
        me: usize,
    },
}

impl Links<'_> {
    /// True when `n` is one of them.
    pub fn contains(&self, n: PhoneNumber) -> bool {
        match self {
            Links::Pool(p) => p.contains(n),
            Links::Board { board, me } => board.answers(*me, n),
        }
    }
}

/// A call the server takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admitted {
    /// Deposit (recipient) or retrieval (link number).
    pub target: Target<PhoneNumber>,
    /// The caller, if it is a number.
    pub caller: Option<PhoneNumber>,
    /// The caller's identity carries STIR/SHAKEN's `TN-Validation-Passed`.
    pub verified: bool,
    /// Forwarded because the recipient was busy: the busy greeting plays.
    pub busy: bool,
    /// The INVITE's offer; `None`: a late offer (ours goes in the 200).
    pub offer: Option<Negotiated>,
    /// The session timer agreed (RFC 4028).
    pub timer: Option<SessionTimer>,
}

/// The answer to an INVITE the server does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// Header lines (each ending in CRLF).
    pub extra: String,
}

fn refuse(code: u16, reason: &'static str, extra: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason,
        extra: extra.into(),
    }
}

/// `503` with a short Retry-After: no room for this call right now.
pub fn busy() -> Refusal {
    refuse(503, "Service Unavailable", "Retry-After: 1\r\n")
}

/// Decides on an initial INVITE (RFC 3261 §8.2 order: extensions, content, then the call).
pub fn admit(msg: &Message<'_>, ctx: &Context<'_>) -> Result<Admitted, Refusal> {
    if ctx.draining {
        return Err(refuse(503, "Service Unavailable", "Retry-After: 5\r\n"));
    }
    if ctx.active >= ctx.capacity {
        return Err(busy());
    }
    // §8.2.2.3: a UAS answers Require (Proxy-Require is for proxies).
    let unsupported: Vec<&str> = msg
        .header_values("require")
        .flat_map(split_commas)
        .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .collect();
    if !unsupported.is_empty() {
        let extra = format!("Unsupported: {}\r\n", unsupported.join(", "));
        return Err(refuse(420, "Bad Extension", extra));
    }
    if let Some(accept) = msg.header("accept")
        && !accept.to_ascii_lowercase().contains("application/sdp")
    {
        return Err(refuse(406, "Not Acceptable", ""));
    }
    let ctype = msg.header("content-type").unwrap_or("");
    if !msg.body.is_empty()
        && !ctype
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/sdp")
    {
        return Err(refuse(
            415,
            "Unsupported Media Type",
            "Accept: application/sdp\r\n",
        ));
    }
    let contact = msg
        .header_values("contact")
        .next()
        .and_then(NameAddr::parse)
        .and_then(|n| Uri::parse(n.uri));
    if !contact.is_some_and(|u| u.is_sip()) {
        return Err(refuse(
            400,
            "Missing Contact",
            "Warning: 399 boxless \"an INVITE needs a sip: or sips: Contact\"\r\n",
        ));
    }
    let timer = match session::negotiate(msg, ctx.min_se) {
        Negotiation::Off => None,
        Negotiation::On(t) => Some(t),
        Negotiation::TooSmall(min) => {
            return Err(refuse(
                422,
                "Session Interval Too Small",
                format!("Min-SE: {min}\r\n"),
            ));
        }
    };
    let target = parties::target(
        msg,
        |u| ctx.numbering.normalize(u),
        |n| ctx.links.contains(n),
    )
    .ok_or_else(|| refuse(404, "Not Found", ""))?;
    let offer = if msg.body.is_empty() {
        None
    } else {
        match negotiate(msg.body) {
            Ok(n) => Some(n),
            Err(e) => {
                let extra = format!("Warning: 399 boxless \"{e}\"\r\n");
                return Err(refuse(488, "Not Acceptable Here", extra));
            }
        }
    };
    Ok(Admitted {
        target,
        caller: parties::caller(msg).and_then(|u| ctx.numbering.normalize(&u)),
        verified: parties::caller_verified(msg),
        busy: parties::forwarded_busy(msg),
        offer,
        timer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_media::write_sdp;
    use boxless_sip::session::Refresher;

    fn invite(ruri: &str, extra: &str, sdp: bool) -> Vec<u8> {
        let body = if sdp {
            write_sdp("127.0.0.1:6000".parse().unwrap(), 1, 1, None)
        } else {
            String::new()
        };
        let ctype = if sdp {
            "Content-Type: application/sdp\r\n"
        } else {
            ""
        };
        format!(
            "INVITE sip:{ruri}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\n\
From: <sip:+15551230001@h>;tag=a\r\nTo: <sip:{ruri}@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:+15551230001@127.0.0.1:9>\r\n{extra}{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn decide(b: &[u8], f: impl FnOnce(&mut Context<'_>)) -> Result<Admitted, Refusal> {
        let numbering = Numbering::new("1").unwrap();
        let pool = LinkPool::parse(&["+15550001000-+15550001099"]).unwrap();
        let mut ctx = Context {
            draining: false,
            active: 0,
            capacity: 10,
            numbering: &numbering,
            links: Links::Pool(&pool),
            min_se: 90,
        };
        f(&mut ctx);
        admit(&Message::parse(b, false).unwrap(), &ctx)
    }

    fn code(r: Result<Admitted, Refusal>) -> u16 {
        r.map_or_else(|r| r.code, |_| 200)
    }

    #[test]
    fn deposits_retrievals_and_late_offers() {
        let a = decide(&invite("+15551230002", "", true), |_| {}).unwrap();
        assert_eq!(
            a.target,
            Target::Deposit(PhoneNumber::parse_e164("+15551230002").unwrap())
        );
        assert_eq!(a.caller, PhoneNumber::parse_e164("+15551230001"));
        assert!(a.offer.is_some() && a.timer.is_none() && !a.verified);
        let a = decide(&invite("5550001007", "", false), |_| {}).unwrap();
        assert_eq!(
            a.target,
            Target::Retrieval(PhoneNumber::parse_e164("+15550001007").unwrap())
        );
        assert!(a.offer.is_none(), "late offer");
        // Forwarded to a link number: a deposit for the forwarding party.
        let fwd = invite(
            "5550001007",
            "Diversion: <sip:+15551230009@h>;reason=no-answer\r\n",
            true,
        );
        assert_eq!(
            decide(&fwd, |_| {}).unwrap().target,
            Target::Deposit(PhoneNumber::parse_e164("+15551230009").unwrap())
        );
    }

    #[test]
    fn refusals_name_the_reason() {
        assert_eq!(
            code(decide(&invite("+15551230002", "", true), |c| c.draining = true)),
            503
        );
        assert_eq!(
            code(decide(&invite("+15551230002", "", true), |c| c.active = 10)),
            503
        );
        let r = decide(
            &invite("+15551230002", "Require: timer, foo\r\n", true),
            |_| {},
        )
        .unwrap_err();
        assert_eq!((r.code, r.extra.as_str()), (420, "Unsupported: foo\r\n"));
        assert_eq!(
            code(decide(
                &invite(
                    "+15551230002",
                    "Require: timer\r\nSession-Expires: 300\r\n",
                    true
                ),
                |_| {}
            )),
            200,
            "timer is supported"
        );
        assert_eq!(
            code(decide(
                &invite("+15551230002", "Accept: text/plain\r\n", true),
                |_| {}
            )),
            406
        );
        let r = decide(
            &invite("+15551230002", "Session-Expires: 60\r\n", true),
            |_| {},
        )
        .unwrap_err();
        assert_eq!((r.code, r.extra.as_str()), (422, "Min-SE: 90\r\n"));
        assert_eq!(code(decide(&invite("bob", "", true), |_| {})), 404);
        let no_contact = String::from_utf8(invite("+15551230002", "", true))
            .unwrap()
            .replace("Contact: <sip:+15551230001@127.0.0.1:9>\r\n", "");
        assert_eq!(code(decide(no_contact.as_bytes(), |_| {})), 400);
        let g729 = String::from_utf8(invite("+15551230002", "", true))
            .unwrap()
            .replace("RTP/AVP 0 8 9 101", "RTP/AVP 18 101");
        let r = decide(g729.as_bytes(), |_| {}).unwrap_err();
        assert_eq!(r.code, 488);
        assert!(r.extra.contains("no common codec"));
    }

    #[test]
    fn a_proxy_inserted_session_timer_makes_us_refresh() {
        let a = decide(
            &invite("+15551230002", "Session-Expires: 600\r\n", true),
            |_| {},
        )
        .unwrap();
        let t = a.timer.unwrap();
        assert_eq!((t.refresher, t.interval.as_secs()), (Refresher::Uas, 600));
    }
}
