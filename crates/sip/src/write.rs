//! Printing requests and responses into a caller-owned buffer (no allocation once the
//! buffer is warm).

use std::io::Write as _;
use std::net::SocketAddr;

use crate::hdr::{self, Via};
use crate::parse::Message;

/// Where a response to a request goes (RFC 3261 §18.2.2, RFC 3581): always the address the
/// request came from — never a host named in the message — at the port of the top Via's
/// sent-by (default 5060), or the source port when the Via asks for `rport`.
pub fn response_target(via: &Via<'_>, source: SocketAddr) -> SocketAddr {
    let port = if via.rport.is_some() {
        source.port()
    } else {
        via.port.unwrap_or(5060)
    };
    SocketAddr::new(source.ip(), port)
}

/// A stable To-tag for stateless responses: the same request always gets the same tag.
pub fn stateless_tag(msg: &Message<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let branch = msg.top_via().and_then(|v| v.branch).unwrap_or("");
    for b in msg
        .call_id
        .bytes()
        .chain(branch.bytes())
        .chain(msg.from.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Writes a response to `req` into `out` (cleared first).
///
/// Copies Via (adding `received`/`rport` to the top one when `source` is given), From, To
/// (adding `to_tag` if the request had none), Call-ID and CSeq, then `extra` (complete
/// header lines, each ending in CRLF), then Content-Type/Content-Length and `body`.
#[allow(clippy::too_many_arguments)] // Mirrors the parts of a response; a builder would allocate.
pub fn write_response(
    out: &mut Vec<u8>,
    req: &Message<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&dyn std::fmt::Display>,
    source: Option<SocketAddr>,
    extra: &[u8],
    body: Option<(&str, &[u8])>,
) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    let mut first = true;
    for h in req.headers().iter().filter(|h| h.is("via")) {
        for v in hdr::split_commas(h.value) {
            out.extend_from_slice(b"Via: ");
            if first && let Some(src) = source {
                write_top_via(out, v, src);
            } else {
                out.extend_from_slice(v.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            first = false;
        }
    }
    if !req.from.is_empty() {
        let _ = write!(out, "From: {}\r\n", req.from);
    }
    if !req.to.is_empty() {
        let has_tag = hdr::NameAddr::parse(req.to).and_then(|n| n.tag()).is_some();
        match to_tag {
            Some(tag) if !has_tag => {
                let _ = write!(out, "To: {};tag={tag}\r\n", req.to);
            }
            _ => {
                let _ = write!(out, "To: {}\r\n", req.to);
            }
        }
    }
    if !req.call_id.is_empty() {
        let _ = write!(out, "Call-ID: {}\r\n", req.call_id);
    }
    if let Some(cseq) = req.cseq {
        let _ = write!(out, "CSeq: {} {}\r\n", cseq.seq, cseq.method);
    }
    out.extend_from_slice(extra);
    write_body(out, body);
}

/// A request to print: the parts a UAC chooses. Dialog requests get these from
/// [`crate::Dialog::request`]; out-of-dialog ones (a test phone's INVITE) fill them in.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method token (`BYE`, `UPDATE`, ...).
    pub method: &'a str,
    /// Request-URI.
    pub uri: &'a str,
    /// Via transport token (`UDP`, `TCP`, `TLS`).
    pub transport: &'a str,
    /// Via sent-by (`host:port`).
    pub sent_by: &'a str,
    /// Via branch (starts with the RFC 3261 magic cookie).
    pub branch: &'a str,
    /// Route header values, in order.
    pub route: &'a [String],
    /// From value, with its tag.
    pub from: &'a str,
    /// To value (with the remote tag inside a dialog).
    pub to: &'a str,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number (the method is `method`).
    pub cseq: u32,
    /// Contact URI, if the request carries one.
    pub contact: Option<&'a str>,
    /// Further complete header lines, each ending in CRLF.
    pub extra: &'a [u8],
    /// Content type and body.
    pub body: Option<(&'a str, &'a [u8])>,
}

/// Writes `r` into `out` (cleared first), with `Max-Forwards: 70`.
pub fn write_request(out: &mut Vec<u8>, r: &Request<'_>) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{} {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={};rport\r\nMax-Forwards: 70\r\n",
        r.method, r.uri, r.transport, r.sent_by, r.branch
    );
    for route in r.route {
        let _ = write!(out, "Route: {route}\r\n");
    }
    let _ = write!(
        out,
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
        r.from, r.to, r.call_id, r.cseq, r.method
    );
    if let Some(c) = r.contact {
        let _ = write!(out, "Contact: <{c}>\r\n");
    }
    out.extend_from_slice(r.extra);
    write_body(out, r.body);
}

fn write_body(out: &mut Vec<u8>, body: Option<(&str, &[u8])>) {
    match body {
        Some((ctype, b)) => {
            let _ = write!(
                out,
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
}

fn write_top_via(out: &mut Vec<u8>, v: &str, src: SocketAddr) {
    let Some(via) = Via::parse(v) else {
        out.extend_from_slice(v.as_bytes());
        return;
    };
    // Rebuild the parameter list: received is always set, rport filled in when asked for.
    let head_len = v.len() - via.params.len();
    let head = v[..head_len].trim_end_matches(';');
    out.extend_from_slice(head.trim_end().as_bytes());
    for p in via.params.split(';') {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.is_empty() || name.eq_ignore_ascii_case("received") {
            continue;
        }
        if name.eq_ignore_ascii_case("rport") {
            let _ = write!(out, ";rport={}", src.port());
            continue;
        }
        out.push(b';');
        out.extend_from_slice(p.trim().as_bytes());
    }
    let _ = write!(out, ";received={}", src.ip());
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"INVITE sip:+15551230002@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP host.example:5090;rport;branch=z9hG4bK-1, SIP/2.0/UDP b:1;branch=z9hG4bK-2\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=a\r\n\
To: <sip:+15551230002@127.0.0.1>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn response_copies_dialog_headers_and_fills_rport() {
        let m = Message::parse(REQ, false).unwrap();
        let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut out = Vec::new();
        write_response(
            &mut out,
            &m,
            302,
            "Moved Temporarily",
            Some(&"t1"),
            Some(src),
            b"Contact: <sip:x@y>\r\n",
            None,
        );
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.starts_with("SIP/2.0 302 Moved Temporarily\r\n"));
        assert!(s.contains("Via: SIP/2.0/UDP host.example:5090;rport=4000;branch=z9hG4bK-1;received=127.0.0.1\r\n"), "{s}");
        assert!(s.contains("Via: SIP/2.0/UDP b:1;branch=z9hG4bK-2\r\n"));
        assert!(s.contains("To: <sip:+15551230002@127.0.0.1>;tag=t1\r\n"));
        let r = Message::parse(&out, false).unwrap();
        assert_eq!(r.status(), Some(302));
        assert_eq!(response_target(&m.top_via().unwrap(), src), src);
    }

    #[test]
    fn response_goes_to_source_ip_and_sent_by_port() {
        let v = Via::parse("SIP/2.0/UDP 192.168.255.111:5080;branch=z9hG4bKx").unwrap();
        let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(response_target(&v, src), "127.0.0.1:5080".parse().unwrap());
    }
}
