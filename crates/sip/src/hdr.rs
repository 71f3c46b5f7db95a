//! Typed, borrowed views of the header fields Boxless reads.

use crate::lex::{ByteSet, find_byte, find1, is_token_char, parse_small_uint, split1, trim_lws};

const LWS: &ByteSet = &ByteSet::new(b" \t\r\n", false);
const PARAM_SEP: &ByteSet = &ByteSet::new(b";,", false);
const HOST: &ByteSet = &ByteSet::new(b"-.[]:_", true);
const SCHEME: &ByteSet = &ByteSet::new(b"+-.", true);
const URI_STOP: &ByteSet = &ByteSet::new(b" \t\r\n<>", false);
const ADDR_SPEC_STOP: &ByteSet = &ByteSet::new(b"?,\"", false);

/// Splits a header value at commas that are outside quotes and angle brackets.
pub fn split_commas(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut in_quote = false;
        let mut in_angle = false;
        let mut escaped = false;
        for (i, b) in s.bytes().enumerate() {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if in_quote => escaped = true,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => in_angle = true,
                b'>' if !in_quote => in_angle = false,
                b',' if !in_quote && !in_angle => {
                    rest = Some(&s[i + 1..]);
                    return Some(trim_lws(&s[..i]));
                }
                _ => {}
            }
        }
        rest = None;
        Some(trim_lws(s))
    })
}

/// Iterates `;name[=value]` parameters; `None` items mean a malformed parameter.
fn params(s: &str) -> impl Iterator<Item = Option<(&str, Option<&str>)>> {
    let mut parts = if trim_lws(s).is_empty() {
        None
    } else {
        Some(s.split(';'))
    };
    std::iter::from_fn(move || {
        let p = parts.as_mut()?.next()?;
        let (name, value) = match split1(p, b'=') {
            Some((n, v)) => (trim_lws(n), Some(trim_lws(v))),
            None => (trim_lws(p), None),
        };
        if name.is_empty() || !name.bytes().all(is_token_char) || value == Some("") {
            return Some(None);
        }
        Some(Some((name, value)))
    })
}

/// Looks up a parameter in a `;`-separated list (without the leading `;`).
pub fn param<'a>(list: &'a str, name: &str) -> Option<Option<&'a str>> {
    params(list)
        .flatten()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn params_valid(list: &str) -> bool {
    params(list).all(|p| p.is_some())
}

/// A Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// UDP, TCP, TLS, SCTP or an extension token.
    pub transport: &'a str,
    /// sent-by host.
    pub host: &'a str,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// The branch parameter.
    pub branch: Option<&'a str>,
    /// The rport parameter: `Some(None)` when present without a value.
    pub rport: Option<Option<&'a str>>,
    /// All parameters after sent-by, without the leading `;`.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one Via value (already split at commas).
    pub fn parse(v: &'a str) -> Option<Via<'a>> {
        let mut it = v.splitn(3, '/');
        let name = trim_lws(it.next()?);
        let version = trim_lws(it.next()?);
        let rest = trim_lws(it.next()?);
        if name != "SIP" || version != "2.0" {
            return None;
        }
        let t_end = find_byte(rest, LWS)?;
        let transport = &rest[..t_end];
        if transport.is_empty() || !transport.bytes().all(is_token_char) {
            return None;
        }
        let rest = trim_lws(&rest[t_end..]);
        let (sent_by, params_s) = match find1(rest, b';') {
            Some(i) => (trim_lws(&rest[..i]), &rest[i + 1..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(sent_by)?;
        if !params_valid(params_s) {
            return None;
        }
        Some(Via {
            transport,
            host,
            port,
            branch: param(params_s, "branch").flatten(),
            rport: param(params_s, "rport"),
            params: params_s,
        })
    }

    /// Reads only the sent-by of a Via whose version or parameters are malformed, so that
    /// an error response can still go back (RFC 3261 §18.2.2). Parameters are dropped.
    pub fn parse_sent_by(v: &'a str) -> Option<Via<'a>> {
        let mut it = v.splitn(3, '/');
        let _name = it.next()?;
        let _version = it.next()?;
        let rest = trim_lws(it.next()?);
        let t_end = find_byte(rest, LWS)?;
        let transport = &rest[..t_end];
        let rest = trim_lws(&rest[t_end..]);
        let sent_by = &rest[..find_byte(rest, PARAM_SEP).unwrap_or(rest.len())];
        let (host, port) = split_host_port(sent_by)?;
        Some(Via {
            transport,
            host,
            port,
            branch: None,
            rport: None,
            params: "",
        })
    }

    /// True when the branch carries the RFC 3261 magic cookie and something after it.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
}

/// Splits `host[:port]`, validating both; IPv6 references keep their brackets.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = trim_lws(s);
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = find1(rest, b']')?;
        let host = &s[..close + 2];
        let after = &rest[close + 1..];
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match split1(s, b':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = trim_lws(host);
    if host.is_empty() || !host.bytes().all(|b| HOST.has(b)) {
        return None;
    }
    let port = match port {
        Some(p) => Some(parse_small_uint(p, 65535)? as u16),
        None => None,
    };
    Some((host, port))
}

/// A SIP or other URI (RFC 3261 §19.1), borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// `sip`, `sips`, `tel`, ...
    pub scheme: &'a str,
    /// The user part, still %-escaped (for `tel:` the number).
    pub user: Option<&'a str>,
    /// Host (empty for non-SIP schemes).
    pub host: &'a str,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters without the leading `;`.
    pub params: &'a str,
    /// Header part after `?`, if any.
    pub headers: Option<&'a str>,
}

impl<'a> Uri<'a> {
    /// Parses a URI; unknown schemes parse with an opaque body.
    pub fn parse(s: &'a str) -> Option<Uri<'a>> {
        let s = trim_lws(s);
        let (scheme, rest) = split1(s, b':')?;
        if scheme.is_empty()
            || !scheme.bytes().all(|b| SCHEME.has(b))
            || find_byte(rest, URI_STOP).is_some()
        {
            return None;
        }
        let mut uri = Uri {
            scheme,
            user: None,
            host: "",
            port: None,
            params: "",
            headers: None,
        };
        if scheme.eq_ignore_ascii_case("tel") {
            let (num, params) = split1(rest, b';').unwrap_or((rest, ""));
            uri.user = Some(num);
            uri.params = params;
            return Some(uri);
        }
        if !uri.is_sip() {
            return Some(uri);
        }
        // The user part ends at the first '@' (it may hold '?', ',' and ';'); headers
        // start at the first '?' after it.
        let (user, after_user) = match find1(rest, b'@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match split1(after_user, b'?') {
            Some((r, h)) => (r, Some(h)),
            None => (after_user, None),
        };
        uri.headers = headers;
        if let Some(userinfo) = user {
            let user = split1(userinfo, b':').map_or(userinfo, |(u, _)| u);
            if user.is_empty() {
                return None;
            }
            uri.user = Some(user);
        }
        let (hp, params) = split1(hostpart, b';').unwrap_or((hostpart, ""));
        let (host, port) = split_host_port(hp)?;
        if !params_valid(params) {
            return None;
        }
        uri.host = host;
        uri.port = port;
        uri.params = params;
        Some(uri)
    }

    /// True for sip:, sips: and tel:, the schemes Boxless routes.
    pub fn is_sip(&self) -> bool {
        ["sip", "sips", "tel"]
            .iter()
            .any(|s| self.scheme.eq_ignore_ascii_case(s))
    }

    /// A URI parameter.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        param(self.params, name)
    }

    /// The host and port as a socket address when the host is an IP literal (default port
    /// 5060). Names are never resolved: nothing is sent to a host a message names.
    pub fn ip_addr(&self) -> Option<std::net::SocketAddr> {
        let ip: std::net::IpAddr = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        Some(std::net::SocketAddr::new(ip, self.port.unwrap_or(5060)))
    }
}

/// A name-addr or addr-spec with header parameters (From, To, Contact, Diversion, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written (quotes kept), possibly empty.
    pub display: &'a str,
    /// The URI text.
    pub uri: &'a str,
    /// Header parameters without the leading `;`.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Parses one value (already split at commas).
    pub fn parse(v: &'a str) -> Option<NameAddr<'a>> {
        let v = trim_lws(v);
        let bytes = v.as_bytes();
        // Find a '<' outside a quoted string.
        let mut i = 0;
        let mut in_quote = false;
        let mut lt = None;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_quote => i += 1,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => {
                    lt = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        if in_quote {
            return None;
        }
        match lt {
            Some(lt) => {
                let display = trim_lws(&v[..lt]);
                if !valid_display_name(display) {
                    return None;
                }
                let gt = find1(&v[lt..], b'>')? + lt;
                let uri = &v[lt + 1..gt];
                Uri::parse(uri)?;
                if uri != trim_lws(uri) {
                    return None;
                }
                let after = trim_lws(&v[gt + 1..]);
                let params = match after.strip_prefix(';') {
                    Some(p) => p,
                    None if after.is_empty() => "",
                    None => return None,
                };
                params_valid(params).then_some(NameAddr {
                    display,
                    uri,
                    params,
                })
            }
            None => {
                let (uri, params) = split1(v, b';').unwrap_or((v, ""));
                let uri = trim_lws(uri);
                if find_byte(uri, ADDR_SPEC_STOP).is_some() {
                    return None;
                }
                Uri::parse(uri)?;
                params_valid(params).then_some(NameAddr {
                    display: "",
                    uri,
                    params,
                })
            }
        }
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        param(self.params, "tag").flatten()
    }
}

fn valid_display_name(d: &str) -> bool {
    if d.is_empty() {
        return true;
    }
    if let Some(inner) = d.strip_prefix('"') {
        // One quoted string, closed at the very end.
        let b = inner.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'"' => return i == b.len() - 1,
                _ => {}
            }
            i += 1;
        }
        return false;
    }
    d.split([' ', '\t', '\r', '\n'])
        .filter(|t| !t.is_empty())
        .all(|t| t.bytes().all(is_token_char))
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number, below 2**31.
    pub seq: u32,
    /// Method token.
    pub method: &'a str,
}

impl<'a> CSeq<'a> {
    /// Parses `number LWS method`.
    pub fn parse(v: &'a str) -> Option<CSeq<'a>> {
        let v = trim_lws(v);
        let split = find_byte(v, LWS)?;
        let seq = parse_small_uint(&v[..split], (1 << 31) - 1)? as u32;
        let method = trim_lws(&v[split..]);
        (!method.is_empty() && method.bytes().all(is_token_char)).then_some(CSeq { seq, method })
    }
}

/// Checks the RFC 1123 date form SIP requires (`Sat, 13 Nov 2010 23:29:00 GMT`).
pub fn valid_sip_date(v: &str) -> bool {
    let v = trim_lws(v);
    let Some(rest) = v.get(5..) else { return false };
    let wk = &v[..5];
    let days = [
        "Mon, ", "Tue, ", "Wed, ", "Thu, ", "Fri, ", "Sat, ", "Sun, ",
    ];
    if !days.contains(&wk) {
        return false;
    }
    let parts: Vec<&str> = rest.split(' ').collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    parts.len() == 5
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && months.contains(&parts[1])
        && parts[2].len() == 4
        && parts[2].bytes().all(|b| b.is_ascii_digit())
        && parts[3].len() == 8
        && parts[4] == "GMT"
}

/// Decodes `%HH` escapes of a user part into `out` (bytes outside ASCII are refused).
pub fn unescape_into(s: &str, out: &mut String) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let Some(hex) = s.get(i + 1..i + 3) else {
                return false;
            };
            let Ok(v) = u8::from_str_radix(hex, 16) else {
                return false;
            };
            if !v.is_ascii() {
                return false;
            }
            out.push(v as char);
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_and_params() {
        let v = Via::parse(
            "SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch, Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;,;,,").is_none());
        assert!(Via::parse("SIP/2.0/UDP h:99999;branch=z9hG4bKx").is_none());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"A \\\"B\\\"\" <sip:+1555@h>;tag=x").unwrap();
        assert_eq!(n.uri, "sip:+1555@h");
        assert_eq!(n.tag(), Some("x"));
        let n = NameAddr::parse("sip:caller@example.net;tag=1").unwrap();
        assert_eq!(n.uri, "sip:caller@example.net");
        assert!(NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>").is_none());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>").is_none());
        assert!(NameAddr::parse("\"W\" < sip:t.watson@example.org >").is_none());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E").is_none());
        assert!(NameAddr::parse("caller<sip:caller@example.com>;tag=323").is_some());
    }

    #[test]
    fn uris() {
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        let u = Uri::parse("tel:+15551230002;phone-context=x").unwrap();
        assert_eq!(u.user, Some("+15551230002"));
        assert!(!Uri::parse("NOTSIP:joe@example.org").unwrap().is_sip());
        assert!(
            Uri::parse("sip:user@example.com?Route=x")
                .unwrap()
                .headers
                .is_some()
        );
    }

    #[test]
    fn commas_respect_quotes_and_brackets() {
        let v: Vec<_> = split_commas("\"a,b\" <sip:x@y;p=1,2>, <sip:z@w>").collect();
        assert_eq!(v, ["\"a,b\" <sip:x@y;p=1,2>", "<sip:z@w>"]);
    }

    #[test]
    fn cseq_and_date() {
        assert_eq!(CSeq::parse("0009\r\n  INVITE").unwrap().seq, 9);
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_none());
        assert!(valid_sip_date("Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(!valid_sip_date("Fri, 01 Jan 2010 16:00:00 EST"));
    }
}
