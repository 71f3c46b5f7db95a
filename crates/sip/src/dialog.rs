//! The UAS side of an INVITE dialog (RFC 3261 §12): its identity, route set, remote target
//! and CSeq spaces, and the requests Boxless sends inside it (BYE, a refreshing UPDATE).
//!
//! Plain data: no clock, no socket. A dialog exists only when the INVITE had what one needs
//! (a CSeq and a Contact), so its requests can always be printed.

use std::net::SocketAddr;

use crate::hdr::{NameAddr, Uri};
use crate::parse::{Message, Method};
use crate::write::{Request, write_request};

/// What identifies a dialog's messages, kept by whoever sorts messages to calls (RFC 3261
/// §12.2.2: Call-ID and both tags; §9.2 and §17.2.3: a CANCEL or an INVITE retransmission
/// by the INVITE's branch; responses by the branches of our own requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our To-tag.
    pub local_tag: String,
    /// The caller's From-tag (none from an RFC 2543 peer).
    pub remote_tag: Option<String>,
    /// The initial INVITE's top Via branch.
    pub invite_branch: Option<String>,
    /// Every branch of our requests in this dialog starts with this.
    pub branch_prefix: String,
}

impl DialogId {
    /// True when `msg` (any Call-ID) belongs to this dialog.
    pub fn matches(&self, msg: &Message<'_>) -> bool {
        if msg.call_id != self.call_id {
            return false;
        }
        let branch = msg.top_via().and_then(|v| v.branch);
        if msg.method().is_none() {
            // A response: only to a request we sent.
            return branch
                .and_then(|b| b.strip_prefix(self.branch_prefix.as_str()))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        }
        let from_tag = NameAddr::parse(msg.from).and_then(|n| n.tag());
        if from_tag != self.remote_tag.as_deref() {
            return false;
        }
        match NameAddr::parse(msg.to).and_then(|n| n.tag()) {
            Some(to_tag) => to_tag == self.local_tag,
            None => branch.is_some() && branch == self.invite_branch.as_deref(),
        }
    }
}

/// What the UAS chooses for its side of the dialog.
#[derive(Debug, Clone)]
pub struct Local {
    /// Our To-tag.
    pub tag: String,
    /// Our Contact URI (`sip:` or `sips:`, with `transport=` as needed).
    pub contact: String,
    /// Via transport token for our requests.
    pub transport: &'static str,
    /// Via sent-by for our requests.
    pub sent_by: String,
    /// Branch prefix: random, starting with the RFC 3261 magic cookie.
    pub branch_prefix: String,
}

/// Why an INVITE cannot start a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// No usable Contact (§8.1.1.8).
    #[error("no usable Contact")]
    NoContact,
    /// No CSeq.
    #[error("no CSeq")]
    NoCSeq,
}

/// One UAS dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    id: DialogId,
    /// Our identity: the INVITE's To with our tag.
    local_uri: String,
    /// The caller's identity: the INVITE's From, with its tag.
    remote_uri: String,
    remote_target: String,
    /// Record-Route values of the INVITE, in order (§12.1.1).
    route: Vec<String>,
    local_cseq: u32,
    remote_cseq: u32,
    contact: String,
    transport: &'static str,
    sent_by: String,
    requests: u32,
}

impl Dialog {
    /// The dialog an initial INVITE creates once we answer it with `local.tag`.
    pub fn uas(invite: &Message<'_>, local: Local) -> Result<Dialog, DialogError> {
        let remote_tag = NameAddr::parse(invite.from).and_then(|n| n.tag());
        let remote_target = invite
            .header_values("contact")
            .next()
            .and_then(NameAddr::parse)
            .filter(|n| Uri::parse(n.uri).is_some_and(|u| u.is_sip()))
            .ok_or(DialogError::NoContact)?
            .uri;
        let cseq = invite.cseq.ok_or(DialogError::NoCSeq)?;
        Ok(Dialog {
            id: DialogId {
                call_id: invite.call_id.to_string(),
                local_tag: local.tag.clone(),
                remote_tag: remote_tag.map(str::to_string),
                invite_branch: invite.top_via().and_then(|v| v.branch).map(str::to_string),
                branch_prefix: local.branch_prefix,
            },
            local_uri: format!("{};tag={}", invite.to, local.tag),
            remote_uri: invite.from.to_string(),
            remote_target: remote_target.to_string(),
            route: invite
                .header_values("record-route")
                .map(str::to_string)
                .collect(),
            local_cseq: 0,
            remote_cseq: cseq.seq,
            contact: local.contact,
            transport: local.transport,
            sent_by: local.sent_by,
            requests: 0,
        })
    }

    /// What identifies this dialog's messages.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Our Contact URI.
    pub fn contact(&self) -> &str {
        &self.contact
    }

    /// Takes the CSeq of a request from the caller: false (answer `500`) when it is not
    /// above the last one (§12.2.2). ACK and CANCEL reuse their INVITE's and pass.
    pub fn remote_cseq(&mut self, msg: &Message<'_>) -> bool {
        let Some(c) = msg.cseq else { return false };
        if matches!(msg.method(), Some(Method::Ack | Method::Cancel)) {
            return true;
        }
        if c.seq <= self.remote_cseq {
            return false;
        }
        self.remote_cseq = c.seq;
        true
    }

    /// A target refresh (re-INVITE, UPDATE): a new Contact replaces the remote target.
    pub fn refresh_target(&mut self, msg: &Message<'_>) {
        if let Some(uri) = msg
            .header_values("contact")
            .next()
            .and_then(NameAddr::parse)
            .filter(|n| Uri::parse(n.uri).is_some_and(|u| u.is_sip()))
        {
            self.remote_target = uri.uri.to_string();
        }
    }

    /// Where our requests go first: the first route's address when the route set is not
    /// empty, else the remote target's; `None` when that is a name, not an IP literal
    /// (the driver then answers on the address the INVITE came from).
    pub fn next_hop(&self) -> Option<SocketAddr> {
        let uri = match self.route.first() {
            Some(r) => NameAddr::parse(r)?.uri,
            None => self.remote_target.as_str(),
        };
        Uri::parse(uri)?.ip_addr()
    }

    /// Prints our next request in this dialog into `out`; returns its branch.
    /// Loose routing (§12.2.1.1): the Request-URI is the remote target and the route set
    /// goes into Route; a strict router first in the set gets the Request-URI instead.
    pub fn request(
        &mut self,
        out: &mut Vec<u8>,
        method: &str,
        extra: &[u8],
        body: Option<(&str, &[u8])>,
    ) -> String {
        self.local_cseq += 1;
        self.requests += 1;
        let branch = format!("{}.{}", self.id.branch_prefix, self.requests);
        let strict = self.route.first().is_some_and(|r| {
            NameAddr::parse(r)
                .and_then(|n| Uri::parse(n.uri))
                .is_some_and(|u| u.param("lr").is_none())
        });
        let mut strict_route = Vec::new();
        let (uri, route): (&str, &[String]) = if strict {
            strict_route.extend(self.route[1..].iter().cloned());
            strict_route.push(format!("<{}>", self.remote_target));
            let first = NameAddr::parse(&self.route[0]).map_or("", |n| n.uri);
            (first, &strict_route)
        } else {
            (&self.remote_target, &self.route)
        };
        write_request(
            out,
            &Request {
                method,
                uri,
                transport: self.transport,
                sent_by: &self.sent_by,
                branch: &branch,
                route,
                from: &self.local_uri,
                to: &self.remote_uri,
                call_id: &self.id.call_id,
                cseq: self.local_cseq,
                contact: (method != "BYE").then_some(self.contact.as_str()),
                extra,
                body,
            },
        );
        branch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+15551230002@127.0.0.1:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bKinv\r\n\
Record-Route: <sip:127.0.0.2:5060;lr>, <sip:10.0.0.9;lr>\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\n\
To: <sip:+15551230002@127.0.0.1>\r\n\
Call-ID: call-1\r\nCSeq: 7 INVITE\r\n\
Contact: <sip:+15551230001@127.0.0.1:9000>\r\nContent-Length: 0\r\n\r\n";

    fn dialog(invite: &str) -> Dialog {
        let m = Message::parse(invite.as_bytes(), false).unwrap();
        Dialog::uas(
            &m,
            Local {
                tag: "srv".into(),
                contact: "sip:+15551230002@127.0.0.1:5070".into(),
                transport: "UDP",
                sent_by: "127.0.0.1:5070".into(),
                branch_prefix: "z9hG4bKab12".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn bye_follows_the_route_set_to_the_remote_target() {
        let mut d = dialog(INVITE);
        assert_eq!(d.next_hop(), Some("127.0.0.2:5060".parse().unwrap()));
        let mut out = Vec::new();
        let branch = d.request(&mut out, "BYE", b"Reason: SIP;cause=200\r\n", None);
        let m = Message::parse(&out, false).unwrap();
        assert_eq!(m.method(), Some(Method::Bye));
        assert_eq!(m.request_uri(), Some("sip:+15551230001@127.0.0.1:9000"));
        let routes: Vec<_> = m.header_values("route").collect();
        assert_eq!(routes, ["<sip:127.0.0.2:5060;lr>", "<sip:10.0.0.9;lr>"]);
        assert_eq!(m.from, "<sip:+15551230002@127.0.0.1>;tag=srv");
        assert_eq!(m.to, "<sip:+15551230001@127.0.0.1>;tag=caller");
        assert_eq!(m.cseq.unwrap().seq, 1);
        assert_eq!(m.top_via().unwrap().branch, Some(branch.as_str()));
        assert!(!d.id().matches(&m), "our own request is not the caller's");
        // The response to it is ours.
        let resp = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            m.from, m.to
        );
        assert!(
            d.id()
                .matches(&Message::parse(resp.as_bytes(), false).unwrap())
        );
        d.request(&mut out, "UPDATE", b"", None);
        let m = Message::parse(&out, false).unwrap();
        assert_eq!(m.cseq.unwrap().seq, 2);
        assert_eq!(
            m.header("contact"),
            Some("<sip:+15551230002@127.0.0.1:5070>")
        );
    }

    #[test]
    fn strict_router_gets_the_request_uri() {
        let inv = INVITE.replace("<sip:127.0.0.2:5060;lr>", "<sip:127.0.0.2:5060>");
        let mut d = dialog(&inv);
        let mut out = Vec::new();
        d.request(&mut out, "BYE", b"", None);
        let m = Message::parse(&out, false).unwrap();
        assert_eq!(m.request_uri(), Some("sip:127.0.0.2:5060"));
        let routes: Vec<_> = m.header_values("route").collect();
        assert_eq!(
            routes,
            ["<sip:10.0.0.9;lr>", "<sip:+15551230001@127.0.0.1:9000>"]
        );
    }

    #[test]
    fn remote_cseq_must_rise_and_targets_refresh() {
        let mut d = dialog(INVITE);
        let req = |method: &str, seq: u32, contact: &str| {
            format!(
                "{method} sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9000;branch=z9hG4bK{seq}\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: <sip:+15551230002@127.0.0.1>;tag=srv\r\n\
Call-ID: call-1\r\nCSeq: {seq} {method}\r\n{contact}Content-Length: 0\r\n\r\n"
            )
        };
        let ack = req("ACK", 7, "");
        assert!(d.remote_cseq(&Message::parse(ack.as_bytes(), false).unwrap()));
        let old = req("UPDATE", 7, "");
        assert!(!d.remote_cseq(&Message::parse(old.as_bytes(), false).unwrap()));
        let up = req("UPDATE", 8, "Contact: <sip:a@127.0.0.9:7000>\r\n");
        let m = Message::parse(up.as_bytes(), false).unwrap();
        assert!(d.id().matches(&m));
        assert!(d.remote_cseq(&m));
        d.refresh_target(&m);
        let mut out = Vec::new();
        d.request(&mut out, "BYE", b"", None);
        let bye = Message::parse(&out, false).unwrap();
        assert_eq!(bye.request_uri(), Some("sip:a@127.0.0.9:7000"));
    }

    #[test]
    fn an_invite_without_a_contact_makes_no_dialog() {
        let local = Local {
            tag: "t".into(),
            contact: "sip:x@127.0.0.1".into(),
            transport: "UDP",
            sent_by: "127.0.0.1:5070".into(),
            branch_prefix: "z9hG4bKx".into(),
        };
        let no_contact = INVITE.replace("Contact: <sip:+15551230001@127.0.0.1:9000>\r\n", "");
        let m = Message::parse(no_contact.as_bytes(), false).unwrap();
        assert_eq!(Dialog::uas(&m, local).unwrap_err(), DialogError::NoContact);
    }

    fn msg(start: &str, branch: &str, from_tag: &str, to_tag: &str, cseq: &str) -> Vec<u8> {
        let tag = |t: &str| {
            if t.is_empty() {
                String::new()
            } else {
                format!(";tag={t}")
            }
        };
        format!(
            "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch={branch}\r\nFrom: <sip:+15551230001@h>{}\r\nTo: <sip:+15551230002@h>{}\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            tag(from_tag),
            tag(to_tag)
        )
        .into_bytes()
    }

    #[test]
    fn in_dialog_requests_need_both_tags() {
        let e = DialogId {
            call_id: "c1".into(),
            local_tag: "ours".into(),
            remote_tag: Some("theirs".into()),
            invite_branch: Some("z9hG4bKinv".into()),
            branch_prefix: "z9hG4bKbye".into(),
        };
        let check = |b: Vec<u8>| e.matches(&Message::parse(&b, false).unwrap());
        let bye = "BYE sip:x@127.0.0.1 SIP/2.0";
        assert!(check(msg(bye, "z9hG4bK1", "theirs", "ours", "2 BYE")));
        assert!(
            !check(msg(bye, "z9hG4bK1", "theirs", "other", "2 BYE")),
            "wrong To tag"
        );
        assert!(
            !check(msg(bye, "z9hG4bK1", "forged", "ours", "2 BYE")),
            "wrong From tag"
        );
        assert!(
            !check(msg(bye, "z9hG4bK1", "", "ours", "2 BYE")),
            "no From tag"
        );
        assert!(
            !check(msg(bye, "z9hG4bK1", "theirs", "", "2 BYE")),
            "no To tag"
        );
        // A CANCEL or an INVITE retransmission: the INVITE's branch and From tag.
        let cancel = "CANCEL sip:x@127.0.0.1 SIP/2.0";
        assert!(check(msg(cancel, "z9hG4bKinv", "theirs", "", "1 CANCEL")));
        assert!(!check(msg(cancel, "z9hG4bKelse", "theirs", "", "1 CANCEL")));
        let invite = "INVITE sip:x@127.0.0.1 SIP/2.0";
        assert!(check(msg(invite, "z9hG4bKinv", "theirs", "", "1 INVITE")));
        assert!(!check(msg(invite, "z9hG4bKnew", "other", "", "1 INVITE")));
        // Responses: only to our BYE.
        let ok = "SIP/2.0 200 OK";
        assert!(check(msg(ok, "z9hG4bKbye", "ours", "theirs", "1 BYE")));
        assert!(check(msg(ok, "z9hG4bKbye.2", "ours", "theirs", "2 UPDATE")));
        assert!(!check(msg(ok, "z9hG4bKguess", "ours", "theirs", "1 BYE")));
    }
}
