//! What the proxy prints: forwarded INVITEs (optionally Record-Routed), relayed responses,
//! hop-by-hop ACK and CANCEL, and loose routing of in-dialog requests (RFC 3261 §16.4,
//! §16.11, §16.12) through a router that Record-Routed the dialog. No I/O, no clock.

use std::net::SocketAddr;

use boxless_sip::{Message, NameAddr, Uri, Via, hdr, write_response};

pub(crate) fn simple(msg: &Message<'_>, code: u16, reason: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(512);
    let tag = format!("{:x}", boxless_sip::stateless_tag(msg));
    let tag: Option<&dyn std::fmt::Display> = if code >= 200 { Some(&tag) } else { None };
    write_response(&mut b, msg, code, reason, tag, None, b"", None);
    b
}

/// The INVITE as forwarded: new Request-URI, our Via on top, Max-Forwards decremented.
pub(crate) fn build_forward(
    msg: &Message<'_>,
    ruri: &str,
    local: SocketAddr,
    branch: &str,
    record_route: &str,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(msg.len + 128);
    let _ = std::io::Write::write_fmt(
        &mut b,
        format_args!("INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n"),
    );
    // Ours on top of any already there (§16.6 step 4): complete header lines.
    b.extend_from_slice(record_route.as_bytes());
    let mut saw_mf = false;
    for h in msg.headers() {
        if h.is("content-length") {
            continue;
        }
        if h.is("max-forwards") {
            saw_mf = true;
            let mf = msg.max_forwards.unwrap_or(70).saturating_sub(1);
            let _ = std::io::Write::write_fmt(&mut b, format_args!("Max-Forwards: {mf}\r\n"));
            continue;
        }
        let _ = std::io::Write::write_fmt(&mut b, format_args!("{}: {}\r\n", h.name, h.value));
    }
    if !saw_mf {
        b.extend_from_slice(b"Max-Forwards: 69\r\n");
    }
    let _ = std::io::Write::write_fmt(
        &mut b,
        format_args!("Content-Length: {}\r\n\r\n", msg.body.len()),
    );
    b.extend_from_slice(msg.body);
    b
}

/// A response with its top Via value removed.
pub(crate) fn strip_top_via(msg: &Message<'_>) -> Vec<u8> {
    let mut b = Vec::with_capacity(msg.len);
    let (code, reason) = match msg.start {
        boxless_sip::StartLine::Response { code, reason } => (code, reason),
        boxless_sip::StartLine::Request { .. } => (500, ""),
    };
    let _ = std::io::Write::write_fmt(&mut b, format_args!("SIP/2.0 {code} {reason}\r\n"));
    let mut stripped = false;
    for h in msg.headers() {
        if h.is("content-length") {
            continue;
        }
        if h.is("via") && !stripped {
            stripped = true;
            let rest: Vec<&str> = hdr::split_commas(h.value).skip(1).collect();
            if !rest.is_empty() {
                let _ =
                    std::io::Write::write_fmt(&mut b, format_args!("Via: {}\r\n", rest.join(", ")));
            }
            continue;
        }
        let _ = std::io::Write::write_fmt(&mut b, format_args!("{}: {}\r\n", h.name, h.value));
    }
    let _ = std::io::Write::write_fmt(
        &mut b,
        format_args!("Content-Length: {}\r\n\r\n", msg.body.len()),
    );
    b.extend_from_slice(msg.body);
    b
}

/// The hop-by-hop ACK for a non-2xx final response to our forwarded INVITE.
pub(crate) fn build_ack(inv: &Message<'_>, resp: &Message<'_>) -> Vec<u8> {
    same_transaction(inv, "ACK", resp.to)
}

/// CANCEL for our forwarded INVITE (same Via branch, RFC 3261 §9.1).
pub(crate) fn build_cancel(inv: &Message<'_>) -> Vec<u8> {
    same_transaction(inv, "CANCEL", inv.to)
}

/// A request of the INVITE's own transaction (ACK for a non-2xx, CANCEL): its Request-URI,
/// top Via (hence branch), From, Call-ID and CSeq number, with `method` and `to`.
fn same_transaction(inv: &Message<'_>, method: &str, to: &str) -> Vec<u8> {
    let ruri = inv.request_uri().unwrap_or("sip:invalid");
    let via = inv.header_values("via").next().unwrap_or("");
    let seq = inv.cseq.map_or(1, |c| c.seq);
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\nContent-Length: 0\r\n\r\n",
        inv.from, inv.call_id
    )
    .into_bytes()
}

/// How many of the top Route values of `msg` name this router (its addresses `ours`): one,
/// or two when it record-routed twice for a change of transport (RFC 5658).
pub(crate) fn routes_to_us(msg: &Message<'_>, ours: &[SocketAddr]) -> usize {
    msg.header_values("route")
        .take(2)
        .take_while(|r| {
            NameAddr::parse(r)
                .and_then(|n| Uri::parse(n.uri))
                .and_then(|u| u.ip_addr())
                .is_some_and(|a| ours.contains(&a))
        })
        .count()
}

/// An in-dialog request whose top `skip` Routes are ours, forwarded statelessly: those gone,
/// our Via on top with `branch` (derived from the request's own, so a retransmission is
/// forwarded alike, §16.11), Max-Forwards decremented. Returns the bytes and the next
/// hop: the next Route's address, else the Request-URI's; `None` when that is not an IP
/// literal.
pub(crate) fn forward_in_dialog(
    msg: &Message<'_>,
    local: SocketAddr,
    branch: &str,
    skip: usize,
) -> Option<(Vec<u8>, SocketAddr)> {
    let (method, ruri) = match msg.start {
        boxless_sip::StartLine::Request { method, uri, .. } => (method.as_str(), uri),
        boxless_sip::StartLine::Response { .. } => return None,
    };
    let mut routes = msg.header_values("route").skip(skip);
    let next = match routes.next() {
        Some(r) => Uri::parse(NameAddr::parse(r)?.uri)?.ip_addr()?,
        None => Uri::parse(ruri)?.ip_addr()?,
    };
    let mut b = Vec::with_capacity(msg.len + 128);
    let _ = std::io::Write::write_fmt(
        &mut b,
        format_args!("{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n"),
    );
    let mut to_drop = skip;
    for h in msg.headers() {
        if h.is("content-length") || h.is("max-forwards") {
            continue;
        }
        if h.is("route") && to_drop > 0 {
            let values: Vec<&str> = hdr::split_commas(h.value).collect();
            let gone = to_drop.min(values.len());
            to_drop -= gone;
            if values.len() > gone {
                let rest = values[gone..].join(", ");
                let _ = std::io::Write::write_fmt(&mut b, format_args!("Route: {rest}\r\n"));
            }
            continue;
        }
        let _ = std::io::Write::write_fmt(&mut b, format_args!("{}: {}\r\n", h.name, h.value));
    }
    let mf = msg.max_forwards.unwrap_or(70).saturating_sub(1);
    let _ = std::io::Write::write_fmt(
        &mut b,
        format_args!(
            "Max-Forwards: {mf}\r\nContent-Length: {}\r\n\r\n",
            msg.body.len()
        ),
    );
    b.extend_from_slice(msg.body);
    Some((b, next))
}

/// A response to a request we forwarded statelessly: our Via gone, sent where the next Via
/// says (its `received`/`rport` when present, else its sent-by, which must be an IP).
pub(crate) fn relay_response(msg: &Message<'_>) -> Option<(Vec<u8>, SocketAddr)> {
    let v = msg.header_values("via").nth(1).and_then(Via::parse)?;
    let host = hdr::param(v.params, "received")
        .flatten()
        .unwrap_or(v.host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = v
        .rport
        .flatten()
        .and_then(|p| p.parse().ok())
        .or(v.port)
        .unwrap_or(5060);
    let ip = host.parse().ok()?;
    Some((strip_top_via(msg), SocketAddr::new(ip, port)))
}
