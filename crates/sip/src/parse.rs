//! Zero-copy SIP message parsing (RFC 3261 §7, §18.3; RFC 4475).
//!
//! [`Message::parse`] splits a buffer into start line, header fields and body without
//! allocating. Problems that still let a server answer (a malformed header, a CSeq that does
//! not match the method, an unsupported version) are kept in [`Message::defect`] together with
//! the status code to answer; problems that leave nothing to answer are an [`Error`].

use crate::hdr::{self, CSeq, Via};
use crate::lex::{find1, is_token_char, parse_small_uint, rsplit1, split1, trim_lws};

/// Most header fields one message may carry; more is refused as too large.
pub const MAX_HEADERS: usize = 96;

/// Why a message could not be parsed at all (no response can be formed: drop it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer holds no complete header section.
    #[error("incomplete message: no empty line ends the header section")]
    Incomplete,
    /// The first line is neither a request line nor a status line.
    #[error("malformed start line")]
    StartLine,
    /// A response whose status code is outside 100..=699.
    #[error("bad status code")]
    StatusCode,
    /// More header fields than [`MAX_HEADERS`].
    #[error("too many header fields")]
    TooManyHeaders,
    /// The bytes are not UTF-8 in the start line or header section.
    #[error("header section is not UTF-8")]
    NotUtf8,
}

/// A request method (RFC 3261 §7.1 and extensions). Unknown methods keep their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method<'a> {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// INFO
    Info,
    /// UPDATE (RFC 3311)
    Update,
    /// Any other method token.
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// Classifies a method token (case-sensitive, RFC 3261 §7.1).
    pub fn from_token(s: &'a str) -> Method<'a> {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            other => Method::Other(other),
        }
    }

    /// The method's token.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `Method SP Request-URI SP SIP/2.0`
    Request {
        /// The method.
        method: Method<'a>,
        /// The Request-URI as written.
        uri: &'a str,
    },
    /// `SIP/2.0 SP Status-Code SP Reason-Phrase`
    Response {
        /// 100..=699
        code: u16,
        /// May be empty.
        reason: &'a str,
    },
}

/// Something wrong with a message that still lets a server answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defect {
    /// The status code to answer with.
    pub code: u16,
    /// A short reason phrase saying what is wrong.
    pub reason: &'static str,
}

impl Defect {
    const fn bad(reason: &'static str) -> Defect {
        Defect { code: 400, reason }
    }
}

/// One header field: its canonical name and its raw value (LWS trimmed, folding kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The field name as written (compact forms are expanded by [`Header::is`]).
    pub name: &'a str,
    /// The value, which may contain folded line breaks (CRLF followed by white space).
    pub value: &'a str,
    kind: Kind,
}

impl Header<'_> {
    /// True if this field is `name` (case-insensitive; compact forms understood).
    pub fn is(&self, name: &str) -> bool {
        match Kind::of(name) {
            Kind::Other => header_is(self.name, name),
            k => self.kind == k,
        }
    }
}

impl Header<'_> {
    #[inline]
    fn matches(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Other => self.kind == Kind::Other && header_is(self.name, name),
            k => self.kind == k,
        }
    }
}

/// The header fields the parser itself looks at, classified once per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    Contact,
    Other,
}

impl Kind {
    fn of(name: &str) -> Kind {
        let b = name.as_bytes();
        let Some(&first) = b.first() else {
            return Kind::Other;
        };
        let first = first.to_ascii_lowercase();
        if b.len() == 1 {
            return match first {
                b'v' => Kind::Via,
                b'f' => Kind::From,
                b't' => Kind::To,
                b'i' => Kind::CallId,
                b'l' => Kind::ContentLength,
                b'm' => Kind::Contact,
                _ => Kind::Other,
            };
        }
        let second = b[1].to_ascii_lowercase();
        let (kind, canonical) = match (b.len(), first, second) {
            (3, b'v', _) => (Kind::Via, "via"),
            (4, b'f', _) => (Kind::From, "from"),
            (2, b't', _) => (Kind::To, "to"),
            (7, b'c', b'a') => (Kind::CallId, "call-id"),
            (7, b'c', b'o') => (Kind::Contact, "contact"),
            (4, b'c', _) => (Kind::CSeq, "cseq"),
            (12, b'm', _) => (Kind::MaxForwards, "max-forwards"),
            (14, b'c', _) => (Kind::ContentLength, "content-length"),
            _ => return Kind::Other,
        };
        if name.eq_ignore_ascii_case(canonical) {
            kind
        } else {
            Kind::Other
        }
    }
}

/// A parsed SIP message borrowing its buffer.
#[derive(Debug, Clone, yoke::Yokeable)]
pub struct Message<'a> {
    /// Request or status line.
    pub start: StartLine<'a>,
    headers: [Header<'a>; MAX_HEADERS],
    n_headers: usize,
    /// The body: exactly Content-Length bytes (or the rest of a datagram without one).
    pub body: &'a [u8],
    /// Bytes of the buffer this message used (the rest of a datagram is ignored).
    pub len: usize,
    /// The first problem found that deserves an error response (requests only).
    pub defect: Option<Defect>,
    /// The raw value of the one Call-ID header field.
    pub call_id: &'a str,
    /// The raw value of the one From header field.
    pub from: &'a str,
    /// The raw value of the one To header field.
    pub to: &'a str,
    /// The parsed CSeq, when it parsed.
    pub cseq: Option<CSeq<'a>>,
    /// Max-Forwards, when present and valid.
    pub max_forwards: Option<u8>,
}

const EMPTY: Header<'static> = Header {
    name: "",
    value: "",
    kind: Kind::Other,
};

impl<'a> Message<'a> {
    /// Parses one message from the start of `buf`.
    ///
    /// With `stream == false` (a datagram) a message without Content-Length takes the rest
    /// of the buffer as its body; with `stream == true` Content-Length is mandatory and the
    /// caller must have framed the message with [`crate::frame()`] first.
    pub fn parse(buf: &'a [u8], stream: bool) -> Result<Message<'a>, Error> {
        // A datagram ends the message even when the final empty line is missing.
        let head_end = match find_head_end(buf) {
            Some(e) => e,
            None if !stream && !buf.is_empty() => (buf.len(), buf.len()),
            None => return Err(Error::Incomplete),
        };
        let head = std::str::from_utf8(&buf[..head_end.0]).map_err(|_| Error::NotUtf8)?;
        let body_start = head_end.1;
        let (first, rest) = match head.find('\n') {
            Some(i) => (&head[..i], &head[i + 1..]),
            None => (head, ""),
        };
        let first = first.strip_suffix('\r').unwrap_or(first);
        let mut defect = None;
        let start = parse_start_line(first, &mut defect)?;
        let mut msg = Message {
            start,
            headers: [EMPTY; MAX_HEADERS],
            n_headers: 0,
            body: &[],
            len: buf.len(),
            defect,
            call_id: "",
            from: "",
            to: "",
            cseq: None,
            max_forwards: None,
        };
        msg.split_headers(rest)?;
        msg.check_headers();
        msg.frame_body(buf, body_start, stream);
        // An ACK is never answered, so its deeper checks would change nothing.
        if msg.is_request() && msg.defect.is_none() && msg.method() != Some(Method::Ack) {
            msg.check_request();
        }
        Ok(msg)
    }

    /// The same message over `copy`, a byte-for-byte copy of `buf` (the buffer it was
    /// parsed from): every field points at the same place in the copy, found by its
    /// offset, not by parsing again. `None` when a field lies outside `buf` or `copy` is
    /// not such a copy.
    pub fn rebase<'b>(&self, buf: &'a [u8], copy: &'b [u8]) -> Option<Message<'b>> {
        if copy.len() != buf.len() {
            return None;
        }
        let base = buf.as_ptr() as usize;
        let bytes = |s: &[u8]| -> Option<&'b [u8]> {
            if s.is_empty() {
                return Some(&[]);
            }
            let at = (s.as_ptr() as usize).checked_sub(base)?;
            copy.get(at..at.checked_add(s.len())?)
        };
        let text = |s: &str| -> Option<&'b str> {
            if s.is_empty() {
                return Some("");
            }
            std::str::from_utf8(bytes(s.as_bytes())?).ok()
        };
        let start = match self.start {
            StartLine::Request { method, uri } => StartLine::Request {
                method: match method {
                    Method::Other(m) => Method::Other(text(m)?),
                    Method::Invite => Method::Invite,
                    Method::Ack => Method::Ack,
                    Method::Bye => Method::Bye,
                    Method::Cancel => Method::Cancel,
                    Method::Options => Method::Options,
                    Method::Register => Method::Register,
                    Method::Info => Method::Info,
                    Method::Update => Method::Update,
                },
                uri: text(uri)?,
            },
            StartLine::Response { code, reason } => StartLine::Response {
                code,
                reason: text(reason)?,
            },
        };
        let mut headers = [EMPTY; MAX_HEADERS];
        for (to, h) in headers.iter_mut().zip(self.headers()) {
            *to = Header {
                name: text(h.name)?,
                value: text(h.value)?,
                kind: h.kind,
            };
        }
        Some(Message {
            start,
            headers,
            n_headers: self.n_headers,
            body: bytes(self.body)?,
            len: self.len,
            defect: self.defect,
            call_id: text(self.call_id)?,
            from: text(self.from)?,
            to: text(self.to)?,
            cseq: match self.cseq {
                Some(c) => Some(CSeq {
                    seq: c.seq,
                    method: text(c.method)?,
                }),
                None => None,
            },
            max_forwards: self.max_forwards,
        })
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request's method (None for a response).
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI (None for a response).
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The response's status code (None for a request).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// All header fields in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers[..self.n_headers]
    }

    /// The first value of the field `name` (whole line; may hold several comma-separated values).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers().iter().find(|h| h.is(name)).map(|h| h.value)
    }

    /// Every value of the field `name`, split at top-level commas, in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        let kind = Kind::of(name);
        self.headers()
            .iter()
            .filter(move |h| h.matches(kind, name))
            .flat_map(|h| hdr::split_commas(h.value))
    }

    /// The topmost Via value, parsed.
    pub fn top_via(&self) -> Option<Via<'a>> {
        self.header_values("via").next().and_then(Via::parse)
    }

    /// Where a response to this request goes: the top Via, or only its sent-by when the
    /// rest is malformed (so that a `400` can still be sent).
    pub fn reply_via(&self) -> Option<Via<'a>> {
        let v = self.header_values("via").next()?;
        Via::parse(v).or_else(|| Via::parse_sent_by(v))
    }

    fn split_headers(&mut self, mut rest: &'a str) -> Result<(), Error> {
        while !rest.is_empty() {
            // A field runs until a line break not followed by white space (folding).
            let mut end = 0;
            let bytes = rest.as_bytes();
            let line_end = loop {
                match memchr_nl(&bytes[end..]) {
                    Some(i) => {
                        let nl = end + i;
                        let next = bytes.get(nl + 1).copied();
                        if matches!(next, Some(b' ') | Some(b'\t')) {
                            end = nl + 1;
                            continue;
                        }
                        break nl;
                    }
                    None => break bytes.len(),
                }
            };
            let line = &rest[..line_end];
            rest = rest.get(line_end + 1..).unwrap_or("");
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let Some(colon) = find1(line, b':') else {
                self.note(Defect::bad("Malformed header field"));
                continue;
            };
            let name = line[..colon].trim_end_matches([' ', '\t']);
            let value = trim_lws(&line[colon + 1..]);
            if name.is_empty() || !name.bytes().all(is_token_char) {
                self.note(Defect::bad("Malformed header field name"));
                continue;
            }
            if self.n_headers == MAX_HEADERS {
                return Err(Error::TooManyHeaders);
            }
            self.headers[self.n_headers] = Header {
                name,
                value,
                kind: Kind::of(name),
            };
            self.n_headers += 1;
        }
        Ok(())
    }

    fn note(&mut self, d: Defect) {
        if self.defect.is_none() {
            self.defect = Some(d);
        }
    }

    fn check_headers(&mut self) {
        let mut seen = [0u8; 5];
        for i in 0..self.n_headers {
            let h = self.headers[i];
            match h.kind {
                Kind::CallId => {
                    seen[0] += 1;
                    self.call_id = h.value;
                }
                Kind::From => {
                    seen[1] += 1;
                    self.from = h.value;
                }
                Kind::To => {
                    seen[2] += 1;
                    self.to = h.value;
                }
                Kind::CSeq => {
                    seen[3] += 1;
                    self.cseq = CSeq::parse(h.value);
                    if self.cseq.is_none() {
                        self.note(Defect::bad("Malformed CSeq"));
                    }
                }
                Kind::MaxForwards => {
                    seen[4] += 1;
                    match parse_small_uint(h.value, 255) {
                        Some(v) => self.max_forwards = Some(v as u8),
                        None => self.note(Defect::bad("Malformed Max-Forwards")),
                    }
                }
                _ => {}
            }
        }
        if seen[..4].contains(&0) {
            self.note(Defect::bad("Missing mandatory header field"));
        }
        if seen.iter().any(|&n| n > 1) {
            self.note(Defect::bad("Repeated single-valued header field"));
        }
    }

    fn frame_body(&mut self, buf: &'a [u8], body_start: usize, stream: bool) {
        let available = buf.len().saturating_sub(body_start);
        let mut cl: Option<usize> = None;
        let mut bad = false;
        for h in self.headers() {
            if h.kind != Kind::ContentLength {
                continue;
            }
            match parse_small_uint(h.value, u32::MAX as u64) {
                Some(v) if cl.is_none_or(|c| c == v as usize) => cl = Some(v as usize),
                _ => bad = true,
            }
        }
        if bad {
            self.note(Defect::bad("Bad Content-Length"));
        }
        let len = match cl {
            Some(n) if n <= available => n,
            Some(_) => {
                self.note(Defect::bad("Content-Length larger than message"));
                available
            }
            None if stream => {
                self.note(Defect::bad("Missing Content-Length"));
                available
            }
            None => available,
        };
        self.body = &buf[body_start.min(buf.len())..body_start.min(buf.len()) + len];
        self.len = body_start.min(buf.len()) + len;
    }

    fn check_request(&mut self) {
        if let Some(d) = self.request_defect() {
            self.note(d);
        }
    }

    fn request_defect(&self) -> Option<Defect> {
        let StartLine::Request { method, uri } = self.start else {
            return None;
        };
        let mut vias = 0;
        for v in self.header_values("via") {
            vias += 1;
            if Via::parse(v).is_none() {
                return Some(Defect::bad("Malformed Via"));
            }
        }
        if vias == 0 {
            return Some(Defect::bad("Malformed Via"));
        }
        if hdr::NameAddr::parse(self.from).is_none() || hdr::NameAddr::parse(self.to).is_none() {
            return Some(Defect::bad("Malformed From or To"));
        }
        if self
            .header_values("contact")
            .any(|c| c.trim() != "*" && hdr::NameAddr::parse(c).is_none())
        {
            return Some(Defect::bad("Malformed Contact"));
        }
        if self.header("date").is_some_and(|d| !hdr::valid_sip_date(d)) {
            return Some(Defect::bad("Malformed Date"));
        }
        if let Some(cseq) = self.cseq
            && cseq.method != method.as_str()
        {
            let code = if matches!(method, Method::Other(_)) {
                501
            } else {
                400
            };
            return Some(Defect {
                code,
                reason: "CSeq method does not match the request",
            });
        }
        match hdr::Uri::parse(uri) {
            Some(u) if u.headers.is_some() => {
                Some(Defect::bad("Headers not allowed in Request-URI"))
            }
            Some(u) if !u.is_sip() => Some(Defect {
                code: 416,
                reason: "Unsupported URI Scheme",
            }),
            Some(_) => None,
            None => Some(Defect::bad("Malformed Request-URI")),
        }
    }
}

fn parse_start_line<'a>(
    line: &'a str,
    defect: &mut Option<Defect>,
) -> Result<StartLine<'a>, Error> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (version, rest) = split1(rest, b' ').ok_or(Error::StartLine)?;
        if version != "2.0" {
            return Err(Error::StartLine);
        }
        let (code, reason) = split1(rest, b' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::StatusCode);
        }
        let code: u16 = code.parse().map_err(|_| Error::StatusCode)?;
        if !(100..=699).contains(&code) {
            return Err(Error::StatusCode);
        }
        return Ok(StartLine::Response { code, reason });
    }
    let trimmed = line.trim_end_matches([' ', '\t']);
    let trailing_ws = trimmed.len() != line.len();
    let line = trimmed;
    let (method, rest) = split1(line, b' ').ok_or(Error::StartLine)?;
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(Error::StartLine);
    }
    let (uri, version) = rsplit1(rest, b' ').ok_or(Error::StartLine)?;
    let Some(v) = version.strip_prefix("SIP/") else {
        return Err(Error::StartLine);
    };
    if v != "2.0" {
        *defect = Some(Defect {
            code: 505,
            reason: "Version Not Supported",
        });
    } else if trailing_ws
        || uri.is_empty()
        || uri.bytes().any(|b| b == b' ' || b == b'\t')
        || uri.starts_with('<')
    {
        *defect = Some(Defect::bad("Malformed Request-Line"));
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri,
    })
}

/// Finds the end of the header section: returns (end of headers, start of body).
pub(crate) fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(p) = memchr_nl(&buf[i..]) {
        let nl = i + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some((nl, nl + 2)),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some((nl, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

#[inline]
fn memchr_nl(s: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', s)
}

/// Compares a header name with a canonical lower-case long name, knowing compact forms.
pub fn header_is(name: &str, canonical: &str) -> bool {
    if name.len() == 1 {
        let c = name.as_bytes()[0].to_ascii_lowercase();
        let long = match c {
            b'i' => "call-id",
            b'm' => "contact",
            b'e' => "content-encoding",
            b'l' => "content-length",
            b'c' => "content-type",
            b'f' => "from",
            b's' => "subject",
            b'k' => "supported",
            b'x' => "session-expires",
            b't' => "to",
            b'v' => "via",
            _ => return name.eq_ignore_ascii_case(canonical),
        };
        return long == canonical;
    }
    name.eq_ignore_ascii_case(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:+15551230002@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1\r\n\
From: <sip:+15551230001@127.0.0.1>;tag=a\r\n\
To: <sip:+15551230002@127.0.0.1>\r\n\
Call-ID: c1\r\n\
CSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\n\
Content-Length: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn parses_a_plain_invite() {
        let m = Message::parse(INVITE, false).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.request_uri(), Some("sip:+15551230002@127.0.0.1"));
        assert_eq!(m.call_id, "c1");
        assert_eq!(m.body, b"body");
        assert_eq!(m.len, INVITE.len() - 5);
        assert_eq!(m.max_forwards, Some(70));
        assert_eq!(m.defect, None);
        assert_eq!(m.top_via().unwrap().branch, Some("z9hG4bK-1"));
    }

    #[test]
    fn content_length_larger_than_datagram_is_400() {
        let msg = String::from_utf8_lossy(INVITE).replace("Length: 4", "Length: 400");
        let m = Message::parse(msg.as_bytes(), false).unwrap();
        assert_eq!(m.defect.unwrap().code, 400);
    }

    #[test]
    fn cseq_mismatch_is_400_and_unknown_method_is_501() {
        let msg = String::from_utf8_lossy(INVITE).replace("1 INVITE", "1 BYE");
        let m = Message::parse(msg.as_bytes(), false).unwrap();
        assert_eq!(m.defect.unwrap().code, 400);
        let msg = msg.replacen("INVITE", "FOO", 1);
        let m = Message::parse(msg.as_bytes(), false).unwrap();
        assert_eq!(m.defect.unwrap().code, 501);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            &b""[..],
            b"\r\n\r\n",
            b"HELLO\r\n\r\n",
            b"SIP/2.0 99 x\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(Message::parse(junk, false).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn every_prefix_and_byte_flip_is_handled() {
        for i in 0..INVITE.len() {
            let _ = Message::parse(&INVITE[..i], false);
            let mut b = INVITE.to_vec();
            b[i] ^= 0x5a;
            let _ = Message::parse(&b, true);
        }
    }

    #[test]
    fn compact_names_expand() {
        assert!(header_is("v", "via"));
        assert!(header_is("I", "call-id"));
        assert!(!header_is("x", "via"));
        assert!(header_is("VIA", "via"));
    }
}
