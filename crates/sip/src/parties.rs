//! Who a call is for and who placed it (docs/sip.md, "Who a call is for").
//!
//! Recipient: the first Diversion entry (RFC 5806), else the History-Info entry that was
//! retargeted from (RFC 7044 / RFC 4458), else the Request-URI user. Caller: the
//! P-Asserted-Identity user (RFC 3325), else the From user. Users come back %-decoded;
//! completing them into E.164 is the caller's business.

use crate::hdr::{NameAddr, Uri, unescape_into};
use crate::parse::Message;

/// What a call is for (docs/sip.md): the one rule the router and the servers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<N> {
    /// A call to a link number, not forwarded: play that number's messages.
    Retrieval(N),
    /// Anything else: leave a message for this recipient.
    Deposit(N),
}

/// Deposit or retrieval: a Request-URI that `normalize`s to a number `is_link` knows is a
/// retrieval unless the call was forwarded (Diversion or History-Info: someone forwarded
/// their phone to a number that happens to be a link number). `None`: no recipient.
pub fn target<N: Copy>(
    msg: &Message<'_>,
    normalize: impl Fn(&str) -> Option<N>,
    is_link: impl Fn(N) -> bool,
) -> Option<Target<N>> {
    let diverted = msg.header("diversion").is_some() || msg.header("history-info").is_some();
    if !diverted
        && let Some(n) = msg.request_uri().and_then(user).and_then(|u| normalize(&u))
        && is_link(n)
    {
        return Some(Target::Retrieval(n));
    }
    recipient(msg)
        .and_then(|u| normalize(&u))
        .map(Target::Deposit)
}

/// The recipient's user part, decoded.
pub fn recipient(msg: &Message<'_>) -> Option<String> {
    if let Some(d) = msg.header_values("diversion").next() {
        return NameAddr::parse(d).and_then(|n| user(n.uri));
    }
    let hist: Vec<NameAddr<'_>> = msg
        .header_values("history-info")
        .filter_map(NameAddr::parse)
        .collect();
    if let Some(n) = history_retargeted_from(&hist) {
        return user(n.uri);
    }
    msg.request_uri().and_then(user)
}

/// True when the call was forwarded because the recipient was busy (docs/sip.md,
/// "Greetings"): the first Diversion entry's `reason=user-busy` (RFC 5806; `busy`, which
/// some switches write, too), or a History-Info entry with cause 486 (Busy Here) or 600
/// (Busy Everywhere): RFC 4458's `cause` URI parameter, or RFC 7044's Reason in the
/// URI's headers.
pub fn forwarded_busy(msg: &Message<'_>) -> bool {
    if let Some(d) = msg.header_values("diversion").next() {
        return NameAddr::parse(d)
            .and_then(|n| crate::hdr::param(n.params, "reason").flatten())
            .map(|r| r.trim_matches('"'))
            .is_some_and(|r| {
                r.eq_ignore_ascii_case("user-busy") || r.eq_ignore_ascii_case("busy")
            });
    }
    msg.header_values("history-info")
        .filter_map(NameAddr::parse)
        .filter_map(|n| Uri::parse(n.uri))
        .any(|u| {
            let busy = |c: &str| matches!(c.trim(), "486" | "600");
            u.param("cause").flatten().is_some_and(busy)
                || u.headers.is_some_and(|h| {
                    let mut decoded = String::with_capacity(h.len());
                    unescape_into(h, &mut decoded)
                        && decoded.split('&').any(|kv| {
                            kv.split_once('=').is_some_and(|(k, v)| {
                                k.eq_ignore_ascii_case("reason")
                                    && crate::hdr::param(v, "cause").flatten().is_some_and(busy)
                            })
                        })
                })
        })
}

fn history_retargeted_from<'a>(hist: &[NameAddr<'a>]) -> Option<NameAddr<'a>> {
    // RFC 4244/7044: the entry retargeted from carries the Reason in its URI headers.
    if let Some(n) = hist.iter().find(|n| {
        Uri::parse(n.uri)
            .and_then(|u| u.headers)
            .is_some_and(|h| h.to_ascii_lowercase().contains("reason="))
    }) {
        return Some(*n);
    }
    // RFC 4458: the new target carries `cause`; the entry before it was retargeted from.
    if let Some(i) = hist
        .iter()
        .position(|n| Uri::parse(n.uri).is_some_and(|u| u.param("cause").is_some()))
    {
        return i.checked_sub(1).map(|j| hist[j]);
    }
    // Otherwise the last entry is this hop and the one before it the original target.
    (hist.len() >= 2).then(|| hist[hist.len() - 2])
}

/// The caller's user part, decoded.
pub fn caller(msg: &Message<'_>) -> Option<String> {
    if let Some(pai) = msg.header_values("p-asserted-identity").next()
        && let Some(u) = NameAddr::parse(pai).and_then(|n| user(n.uri))
    {
        return Some(u);
    }
    NameAddr::parse(msg.from).and_then(|n| user(n.uri))
}

/// True when the identity the caller is taken from (P-Asserted-Identity, else From)
/// carries `verstat=TN-Validation-Passed`: the operator's STIR/SHAKEN verification
/// service vouched for the number (RFC 8588; 3GPP TS 24.229 puts the parameter in the
/// URI, as a tel or user parameter, some switches on the header).
pub fn caller_verified(msg: &Message<'_>) -> bool {
    let id = msg
        .header_values("p-asserted-identity")
        .find_map(NameAddr::parse)
        .or_else(|| NameAddr::parse(msg.from));
    // In the URI or the header's parameters only: a display name is the caller's own
    // text, and a forger could write anything there.
    id.and_then(|n| verstat(n.uri).or_else(|| crate::hdr::param(n.params, "verstat").flatten()))
        .is_some_and(|v| v.eq_ignore_ascii_case("TN-Validation-Passed"))
}

/// The value of the first `verstat=` parameter in a URI (a tel or user parameter, or a
/// URI parameter).
fn verstat(v: &str) -> Option<&str> {
    let lower = v.to_ascii_lowercase();
    let at = lower.find(";verstat=")? + ";verstat=".len();
    let rest = &v[at..];
    let end = rest
        .find([';', '>', '@', ',', ' ', '?'])
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The decoded user part of a sip:, sips: or tel: URI.
pub fn user(uri: &str) -> Option<String> {
    let u = Uri::parse(uri)?;
    let raw = u.user?;
    let mut out = String::with_capacity(raw.len());
    unescape_into(raw, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verstat_is_read_from_the_callers_identity() {
        let m = |extra: &str, from: &str| {
            format!(
                "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\
                 From: {from};tag=1\r\nTo: <sip:+18005550100@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
            )
            .into_bytes()
        };
        let ok = |b: Vec<u8>| caller_verified(&Message::parse(&b, false).unwrap());
        let plain = "<sip:+15551230002@h>";
        assert!(!ok(m("", plain)));
        assert!(ok(m(
            "",
            "<sip:+15551230002;verstat=TN-Validation-Passed@h;user=phone>"
        )));
        assert!(ok(m("", "<tel:+15551230002;verstat=TN-Validation-Passed>")));
        assert!(!ok(m(
            "",
            "<tel:+15551230002;verstat=TN-Validation-Failed>"
        )));
        assert!(!ok(m("", "<tel:+15551230002;verstat=No-TN-Validation>")));
        // P-Asserted-Identity is the identity when present: a verstat in From alone
        // does not vouch for it.
        let pai = "P-Asserted-Identity: <sip:+15551230002@h;verstat=TN-Validation-Passed>\r\n";
        assert!(ok(m(pai, plain)));
        // Hostile: the text in a display name, an empty value, a look-alike value.
        assert!(!ok(m(
            "",
            "\"x;verstat=TN-Validation-Passed\" <sip:+15551230002@h>"
        )));
        assert!(!ok(m("", "<sip:+15551230002;verstat=@h>")));
        assert!(!ok(m(
            "",
            "<tel:+15551230002;verstat=TN-Validation-Passed-Not>"
        )));
        assert!(ok(m(
            "",
            "<sip:+15551230002@h>;verstat=TN-Validation-Passed"
        )));
        let pai_plain = "P-Asserted-Identity: <sip:+15551230002@h>\r\n";
        assert!(!ok(m(
            pai_plain,
            "<sip:+15551230002;verstat=TN-Validation-Passed@h>"
        )));
        // The user part still reads as the number.
        let b = m(
            "",
            "<sip:+15551230002;verstat=TN-Validation-Passed@h;user=phone>",
        );
        let c = caller(&Message::parse(&b, false).unwrap()).unwrap();
        assert!(c.starts_with("+15551230002"), "{c}");
    }

    fn msg(extra: &str) -> Vec<u8> {
        format!(
            "INVITE sip:%2B15551230009@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\n\
From: <sip:5551230001@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn parties(extra: &str) -> (Option<String>, Option<String>) {
        let b = msg(extra);
        let m = Message::parse(&b, false).unwrap();
        (recipient(&m), caller(&m))
    }

    #[test]
    fn request_uri_and_from_by_default() {
        assert_eq!(
            parties(""),
            (Some("+15551230009".into()), Some("5551230001".into()))
        );
    }

    #[test]
    fn diversion_first_entry_wins() {
        let (r, _) = parties(
            "Diversion: <sip:+15551230002@a>;reason=no-answer, <sip:+15551230003@b>;reason=busy\r\nHistory-Info: <sip:+1999@h>;index=1\r\n",
        );
        assert_eq!(r.as_deref(), Some("+15551230002"));
    }

    #[test]
    fn history_info_retargeted_from() {
        let (r, _) = parties(
            "History-Info: <sip:+15551230004@h?Reason=SIP%3Bcause%3D486>;index=1, <sip:vm@h>;index=1.1\r\n",
        );
        assert_eq!(r.as_deref(), Some("+15551230004"));
        let (r, _) = parties(
            "History-Info: <sip:+15551230005@h>;index=1, <sip:vm@h;cause=480>;index=1.1\r\n",
        );
        assert_eq!(r.as_deref(), Some("+15551230005"));
        let (r, _) = parties(
            "History-Info: <sip:+15551230006@h>;index=1\r\nHistory-Info: <sip:vm@h>;index=1.1\r\n",
        );
        assert_eq!(r.as_deref(), Some("+15551230006"));
    }

    #[test]
    fn a_call_forwarded_on_busy_is_known_by_its_reason_or_cause() {
        let busy = |extra: &str| forwarded_busy(&Message::parse(&msg(extra), false).unwrap());
        assert!(!busy(""));
        assert!(busy(
            "Diversion: <sip:+15551230002@a>;reason=user-busy;counter=1\r\n"
        ));
        assert!(busy(
            "Diversion: <tel:+15551230002>;reason=\"user-busy\"\r\n"
        ));
        assert!(busy("Diversion: <sip:+15551230002@a>;reason=busy\r\n"));
        assert!(!busy(
            "Diversion: <sip:+15551230002@a>;reason=no-answer\r\n"
        ));
        // The first entry is the last diversion: it decides.
        assert!(!busy(
            "Diversion: <sip:+15551230002@a>;reason=no-answer, <sip:+15551230003@b>;reason=user-busy\r\n"
        ));
        assert!(busy(
            "History-Info: <sip:+15551230004@h?Reason=SIP%3Bcause%3D486%3Btext%3D%22Busy%22>;index=1, <sip:vm@h>;index=1.1\r\n"
        ));
        assert!(busy(
            "History-Info: <sip:+15551230005@h>;index=1, <sip:vm@h;cause=486>;index=1.1\r\n"
        ));
        assert!(busy(
            "History-Info: <sip:+15551230005@h>;index=1, <sip:vm@h;cause=600>;index=1.1\r\n"
        ));
        assert!(!busy(
            "History-Info: <sip:+15551230005@h>;index=1, <sip:vm@h;cause=480>;index=1.1\r\n"
        ));
        assert!(!busy(
            "History-Info: <sip:+15551230004@h?Reason=SIP%3Bcause%3D408>;index=1, <sip:vm@h>;index=1.1\r\n"
        ));
    }

    #[test]
    fn p_asserted_identity_beats_from() {
        let (_, c) = parties("P-Asserted-Identity: \"A\" <tel:+15551230007>\r\n");
        assert_eq!(c.as_deref(), Some("+15551230007"));
    }
}
