//! Web playback (docs/http.md, "Web playback"): `GET /m/{token}` and its audio, Save,
//! Delete and "heard", for the link the SMS carries.
//!
//! The token is the only credential, so these routes skip the API's bearer tokens. Every
//! answer about a token that opens nothing is the same 404 page after the same lookup
//! (a wrong token, a deleted message and an expired one all miss one index), and each miss
//! counts against its source in a bounded table ([`FloodGuard`], per minute): past
//! [`WRONG_PER_MINUTE`] the source gets `429` without a lookup until the minute is over.
//! A router process holds no store: it sends `/m/...` to the server named in the token,
//! with the client's address in `X-Forwarded-For`, and answers `503` with a "try again
//! shortly" page when that server does not answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxless_core::recipient::Languages;
use boxless_core::web::{BaseUrl, WebToken};
use boxless_core::{FloodGuard, PeerFilter, now_ms, rfc3339};
use boxless_store::{MessageInfo, MessageState, Store};
use serde::Deserialize;

use crate::page;
use crate::{ApiState, Remote};

/// Wrong links one source may try per minute before it is refused for the rest of it.
pub const WRONG_PER_MINUTE: u32 = 20;

/// How long a router waits for the server holding a message.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// What web playback needs besides the stores.
#[derive(Debug)]
pub struct Web {
    /// `web.base_url` (its origin is the only one allowed to post the forms).
    pub base_url: Option<BaseUrl>,
    /// `web.trusted_proxies`: whose `X-Forwarded-For` names the client.
    pub proxies: PeerFilter,
    /// Wrong links per source per minute.
    pub wrong: FloodGuard,
    /// The recipient's language for the page.
    pub languages: Languages,
    /// Times on the page are shown at this offset from UTC (`sms.utc_offset_minutes`).
    pub utc_offset_min: i32,
    /// The listener speaks HTTPS: pages carry Strict-Transport-Security.
    pub https: bool,
}

impl Web {
    /// Web playback with `base_url` (None: no link is ever made, every token misses).
    pub fn new(
        base_url: Option<BaseUrl>,
        proxies: PeerFilter,
        languages: Languages,
        utc_offset_min: i32,
        https: bool,
    ) -> Web {
        let mut key = [0u8; 8];
        // A guard keyed by a constant still works; randomness only hardens its hashing.
        let _ = getrandom::fill(&mut key);
        Web {
            base_url,
            proxies,
            wrong: FloodGuard::per_window(WRONG_PER_MINUTE, 60_000, u64::from_le_bytes(key)),
            languages,
            utc_offset_min,
            https,
        }
    }
}

/// The routes (merged into the API's; the auth layer lets `/m/` through).
pub(crate) fn routes() -> axum::Router<ApiState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/m/{token}", get(page_get))
        .route("/m/{token}/audio", get(audio_get))
        .route("/m/{token}/save", post(save_post))
        .route("/m/{token}/delete", post(delete_post))
        .route("/m/{token}/heard", post(heard_post))
        .route(
            "/m/{token}/greeting",
            get(crate::web_greeting::get)
                .post(crate::web_greeting::post)
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::web_greeting::MAX_UPLOAD,
                )),
        )
        .route(
            "/m/{token}/greeting/delete",
            post(crate::web_greeting::delete),
        )
}

pub(crate) type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// The client: the peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not one.
pub(crate) fn client(proxies: &PeerFilter, peer: Option<SocketAddr>, h: &HeaderMap) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let mut ip = peer.ip().to_canonical();
    if !proxies.allows(ip) {
        return ip;
    }
    let Some(xff) = h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) else {
        return ip;
    };
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(a) => {
                ip = a.to_canonical();
                if !proxies.allows(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    ip
}

pub(crate) fn html(web: &Web, code: StatusCode, body: String) -> Response {
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&page::CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    private(web, h);
    r
}

/// Headers every web answer carries: nothing cached by anyone else, no referrer, no
/// framing, no sniffing, not indexed; HSTS over HTTPS.
pub(crate) fn private(web: &Web, h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if web.https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

fn not_found(web: &Web) -> Response {
    html(web, StatusCode::NOT_FOUND, page::NOT_FOUND.clone())
}

/// A token that opens nothing: counted against its source, then the one 404 page.
fn miss(web: &Web, ip: IpAddr) -> Response {
    metrics::counter!("boxless_web_wrong_links_total").increment(1);
    web.wrong.admit(ip, now_ms());
    not_found(web)
}

fn too_many(web: &Web) -> Response {
    metrics::counter!("boxless_web_limited_total").increment(1);
    let mut r = html(web, StatusCode::TOO_MANY_REQUESTS, page::TOO_MANY.clone());
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

/// The request, as the handlers pass it on to a server in another process.
pub(crate) struct Incoming<'a> {
    method: Method,
    path: String,
    headers: &'a HeaderMap,
    body: &'a [u8],
    peer: Option<SocketAddr>,
}

/// Where a token leads.
pub(crate) enum Opened {
    /// This process holds the message.
    Here(Arc<Store>, MessageInfo, WebToken),
    /// The answer is ready: a page of another server's, a 404, a 429 or a 503.
    Answer(Response),
}

/// Finds the message `raw` opens, or the answer to give instead.
pub(crate) async fn open(s: &ApiState, raw: &str, req: Incoming<'_>) -> Opened {
    let web = &s.web;
    let ip = client(&web.proxies, req.peer, req.headers);
    if !web.wrong.peek(ip, now_ms()) {
        return Opened::Answer(too_many(web));
    }
    let token = WebToken::parse(raw);
    let held = token.as_ref().map(|t| crate::holder(s, t.server()));
    if let Some(crate::Holder::Remote(r)) = held {
        let answer = forward(s, r, &req, ip).await;
        if answer.status() == StatusCode::NOT_FOUND {
            // The server counted it against the client too; this process guards itself.
            web.wrong.admit(ip, now_ms());
        }
        return Opened::Answer(answer);
    }
    let local = match held {
        Some(crate::Holder::Local(st)) => Some(st.clone()),
        _ => None,
    };
    // A malformed token or an unknown server still costs one lookup, as a wrong token does.
    let (store, token) = match (local, token) {
        (Some(st), Some(t)) => (st, t),
        _ => match s.stores.first() {
            Some(st) => (
                st.clone(),
                WebToken::parse("x.AAAAAAAAAAAAAAAAAAAA").expect("well-formed"),
            ),
            None => return Opened::Answer(miss(web, ip)),
        },
    };
    let (st, t) = (store.clone(), token.clone());
    match st.read(move |st| st.by_web_token(&t)).await {
        // The token names the server that recorded the message (which may be one this
        // server answers for).
        Ok(Ok(Some(m))) if boxless_store::server_of(&m.id) == Some(token.server()) => {
            Opened::Here(store, m, token)
        }
        Ok(Ok(_)) => Opened::Answer(miss(web, ip)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "web link lookup failed");
            Opened::Answer(unavailable(web))
        }
        Err(_) => Opened::Answer(not_found(web)),
    }
}

/// Sends the request to the server in another process that holds the message.
async fn forward(s: &ApiState, r: &Remote, req: &Incoming<'_>, client: IpAddr) -> Response {
    let xff = match req
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        // Believed only from a trusted proxy; otherwise the peer starts the chain.
        Some(prev) if req.peer.is_some_and(|p| s.web.proxies.allows(p.ip())) => {
            format!("{prev}, {}", req.peer.map_or(client, |p| p.ip()))
        }
        _ => client.to_string(),
    };
    let mut headers: Vec<(&str, &str)> = vec![("X-Forwarded-For", &xff)];
    for name in [
        "range",
        "origin",
        "sec-fetch-site",
        "content-type",
        "if-range",
    ] {
        if let Some(v) = req.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.push((name, v));
        }
    }
    let got = boxless_net::http::send(
        &crate::target(s, r),
        req.method.as_str(),
        &req.path,
        &headers,
        req.body,
        REMOTE_TIMEOUT,
    )
    .await;
    match got {
        Ok(a) if a.status < 500 => {
            let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut resp = (code, a.body).into_response();
            let h = resp.headers_mut();
            for (k, v) in &a.headers {
                if matches!(
                    k.as_str(),
                    "connection" | "transfer-encoding" | "content-length" | "keep-alive" | "date"
                ) {
                    continue;
                }
                if let (Ok(k), Ok(v)) = (
                    header::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    h.append(k, v);
                }
            }
            resp
        }
        other => {
            let why = match other {
                Ok(a) => format!("answered {}", a.status),
                Err(e) => e.to_string(),
            };
            tracing::warn!(server = %r.id, error = %why, "web link: the server holding the message does not answer");
            metrics::counter!("boxless_web_unavailable_total", "server" => r.id.clone())
                .increment(1);
            let mut resp = unavailable(&s.web);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            resp
        }
    }
}

pub(crate) fn incoming<'a>(
    method: Method,
    path: String,
    headers: &'a HeaderMap,
    body: &'a [u8],
    peer: Peer,
) -> Incoming<'a> {
    Incoming {
        method,
        path,
        headers,
        body,
        peer: peer.map(|Extension(ConnectInfo(a))| a),
    }
}

async fn page_get(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let req = incoming(Method::GET, format!("/m/{raw}"), &headers, &[], peer);
    let (_, m, token) = match open(&s, &raw, req).await {
        Opened::Here(st, m, t) => (st, m, t),
        Opened::Answer(r) => return r,
    };
    let lang = language(&s, &m).await;
    let received = boxless_core::util::local_time(m.received_at_ms, s.web.utc_offset_min);
    let iso = rfc3339(m.received_at_ms);
    let body = page::message(
        &page::MessageView {
            token: token.as_str(),
            caller: m.caller,
            received: &received,
            received_iso: &iso,
            duration_ms: m.duration_ms,
            link_number: m.link_number,
            saved: m.state == MessageState::Saved,
            transcript: m.transcript.as_deref(),
            greeting: crate::web_greeting::has(&s, m.recipient).await,
            greeting_max: s.greeting_max_seconds,
        },
        lang,
    );
    metrics::counter!("boxless_web_pages_total").increment(1);
    html(&s.web, StatusCode::OK, body)
}

/// The recipient's language: its entry's (read off the async threads), else its country's.
pub(crate) async fn language(s: &ApiState, m: &MessageInfo) -> boxless_core::recipient::Language {
    let recipient = m.recipient;
    let prefs = match s.recipients.clone() {
        Some(r) => tokio::task::spawn_blocking(move || r.copy().get(recipient).ok().flatten())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    s.web.languages.for_number(recipient, prefs.as_ref())
}

/// `?via=page`: the page's script plays the audio and reports the end itself.
#[derive(Debug, Deserialize)]
pub(crate) struct AudioQuery {
    via: Option<String>,
}

/// One byte range of `len` bytes from a `Range` value: None for the whole file (no header,
/// several ranges, another unit), Err for one that cannot be satisfied.
fn byte_range(h: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if len == 0 || start >= len || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn audio_get(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<AudioQuery>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let path = match &q.via {
        Some(v) if v == "page" => format!("/m/{raw}/audio?via=page"),
        _ => format!("/m/{raw}/audio"),
    };
    let req = incoming(Method::GET, path, &headers, &[], peer);
    let (store, m) = match open(&s, &raw, req).await {
        Opened::Here(st, m, _) => (st, m),
        Opened::Answer(r) => return r,
    };
    // Every browser plays 16-bit PCM WAV (not all play G.711 in WAV): converted if kept so.
    let (st, id) = (store.clone(), m.id.clone());
    let bytes = match st.read(move |st| st.audio_file(&id, false)).await {
        Ok(Ok(Some(b))) => b,
        _ => return not_found(&s.web),
    };
    let len = bytes.len() as u64;
    let range = byte_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let (code, start, end) = match range {
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Err(()) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            private(&s.web, r.headers_mut());
            return r;
        }
    };
    // Without the page's script (which reports the end itself), fetching the audio to its
    // last byte is as near to "played to the end" as the server can see.
    if q.via.is_none() && end + 1 == len && m.state != MessageState::Heard {
        mark(&store, &m.id, MessageState::Heard).await;
    }
    let body = bytes[start as usize..=end as usize].to_vec();
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline; filename=\"voice-message.wav\""),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if code == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    private(&s.web, h);
    // Private to the one browser: shared caches must never keep a message's audio.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    r
}

async fn mark(store: &Arc<Store>, id: &str, state: MessageState) -> bool {
    let (st, id) = (store.clone(), id.to_string());
    match st.write(move |st| st.set_state(&id, state, now_ms())).await {
        Ok(Ok(changed)) => {
            if changed {
                tracing::info!(state = %state.as_str(), "message state (web)");
            }
            true
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "message state NOT recorded (web)");
            false
        }
        Err(_) => false,
    }
}

/// A form or the script may post only from the page itself, so another site cannot make
/// a visitor's browser delete. `Sec-Fetch-Site` decides when the browser sends it (every
/// current one does); else `Origin`, which must be `web.base_url`'s. `Origin: null`
/// (what a browser sends for a form posted under `Referrer-Policy: no-referrer` when it
/// lacks `Sec-Fetch-Site`) is refused; no `Origin` at all (curl, old browsers) passes.
fn same_origin(web: &Web, h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    match get("sec-fetch-site") {
        Some("same-origin") => return true,
        Some("cross-site" | "same-site") => return false,
        _ => {}
    }
    match get("origin") {
        None => true,
        Some(o) => match &web.base_url {
            Some(b) => o == b.origin(),
            None => get("host").is_some_and(|host| {
                o.strip_prefix("https://")
                    .or_else(|| o.strip_prefix("http://"))
                    == Some(host)
            }),
        },
    }
}

pub(crate) fn refused(web: &Web) -> Response {
    metrics::counter!("boxless_web_cross_site_total").increment(1);
    html(web, StatusCode::FORBIDDEN, page::FORBIDDEN.clone())
}

pub(crate) fn unavailable(web: &Web) -> Response {
    html(
        web,
        StatusCode::SERVICE_UNAVAILABLE,
        page::UNAVAILABLE.clone(),
    )
}

/// What every POST does first: the same-origin check, then [`open`].
pub(crate) async fn open_post(
    s: &ApiState,
    raw: &str,
    action: &str,
    peer: Peer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Arc<Store>, MessageInfo, WebToken), Response> {
    if !same_origin(&s.web, headers) {
        return Err(refused(&s.web));
    }
    let req = incoming(
        Method::POST,
        format!("/m/{raw}/{action}"),
        headers,
        body,
        peer,
    );
    match open(s, raw, req).await {
        Opened::Here(st, m, t) => Ok((st, m, t)),
        Opened::Answer(r) => Err(r),
    }
}

async fn save_post(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (store, m, token) = match open_post(&s, &raw, "save", peer, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if !mark(&store, &m.id, MessageState::Saved).await {
        return unavailable(&s.web);
    }
    // Back to the page (relative, so it works under any path prefix of base_url).
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("../{}", token.as_str())) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    private(&s.web, r.headers_mut());
    r
}

fn confirmed(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|b| b.split('&').any(|kv| kv.trim() == "confirm=yes"))
}

async fn delete_post(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (store, m, token) = match open_post(&s, &raw, "delete", peer, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let lang = language(&s, &m).await;
    if !confirmed(&body) {
        return html(
            &s.web,
            StatusCode::OK,
            page::confirm_delete(token.as_str(), lang),
        );
    }
    if !mark(&store, &m.id, MessageState::Deleted).await {
        return unavailable(&s.web);
    }
    html(&s.web, StatusCode::OK, page::deleted(lang))
}

async fn heard_post(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let (store, m, _) = match open_post(&s, &raw, "heard", peer, &headers, &[]).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    mark(&store, &m.id, MessageState::Heard).await;
    let mut r = StatusCode::NO_CONTENT.into_response();
    private(&s.web, r.headers_mut());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_one_or_whole_or_unsatisfiable() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-"), 100), Ok(Some((0, 99))));
        assert_eq!(byte_range(Some("bytes=10-19"), 100), Ok(Some((10, 19))));
        assert_eq!(byte_range(Some("bytes=90-200"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=20-10"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=-0"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=x-"), 100), Err(()));
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let proxies = PeerFilter::parse(&["10.0.0.0/8"]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        let from = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        // A stranger's X-Forwarded-For is ignored.
        assert_eq!(
            client(&proxies, from("192.0.2.1:5000"), &h).to_string(),
            "192.0.2.1"
        );
        // Through trusted proxies: the first address from the right that is not one.
        assert_eq!(
            client(&proxies, from("10.0.0.1:5000"), &h).to_string(),
            "198.51.100.7"
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("junk"));
        assert_eq!(
            client(&proxies, from("10.0.0.1:5000"), &h).to_string(),
            "10.0.0.1"
        );
    }

    #[test]
    fn forms_only_from_the_pages_origin() {
        let w = Web::new(
            Some(BaseUrl::parse("https://vm.example.net").unwrap()),
            PeerFilter::loopback(),
            Languages::default(),
            0,
            false,
        );
        let mut h = HeaderMap::new();
        assert!(
            same_origin(&w, &h),
            "no Origin (an old browser, curl): allowed"
        );
        h.insert("origin", HeaderValue::from_static("https://vm.example.net"));
        assert!(same_origin(&w, &h));
        h.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&w, &h));
        h.remove("origin");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&w, &h));
        // A form under no-referrer: Origin null, but the browser says same-origin.
        h.insert("origin", HeaderValue::from_static("null"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&w, &h));
        h.remove("sec-fetch-site");
        assert!(!same_origin(&w, &h), "null without Sec-Fetch-Site: refused");
        assert!(confirmed(b"confirm=yes") && !confirmed(b"confirm=no"));
    }
}

#[cfg(test)]
mod flow {
    //! The routes over real sockets: a server process's API with a store, and a router
    //! process's API that holds none and forwards.
    use super::*;
    use boxless_core::{ControlLink, LinkPool, PhoneNumber, StatusBoard};
    use boxless_net::http::{Answer, Target, send};
    use boxless_store::NewMessage;
    use std::sync::atomic::AtomicBool;

    fn state(stores: Vec<Arc<Store>>, remotes: Vec<Remote>) -> ApiState {
        ApiState {
            board: Arc::new(StatusBoard {
                slots: Vec::new(),
                control: ControlLink::default(),
            }),
            stores,
            ttl_ms: 3000,
            metrics: crate::prometheus::builder()
                .expect("the buckets are valid")
                .build_recorder()
                .handle(),
            taking_calls: Arc::new(AtomicBool::new(true)),
            remotes,
            remote_tls: None,
            auth: Arc::new(crate::auth::Auth {
                required: true,
                tokens: Vec::new(),
            }),
            recipients: None,
            web: Arc::new(Web::new(
                Some(BaseUrl::parse("https://vm.example.net").unwrap()),
                PeerFilter::loopback(),
                Languages::default(),
                0,
                false,
            )),
            greeting_max_seconds: 30,
        }
    }

    async fn req(
        at: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        send(
            &Target::plain(at),
            method,
            path,
            headers,
            body,
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    fn text(a: &Answer) -> String {
        String::from_utf8_lossy(&a.body).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_link_plays_saves_and_deletes_through_a_router_and_wrong_links_cost_alike() {
        let dir =
            std::env::temp_dir().join(format!("boxless-web-{}-{}", std::process::id(), now_ms()));
        let store = Arc::new(
            Store::open(&dir, "ms1", LinkPool::parse(&["+18005550100"]).unwrap()).unwrap(),
        );
        store
            .enable_web(BaseUrl::parse("https://vm.example.net").unwrap())
            .unwrap();
        let samples: Vec<i16> = (0..24_000).map(|i| ((i % 40) * 300) as i16).collect();
        let m = store
            .deposit(
                &NewMessage {
                    recipient: PhoneNumber::parse_e164("+15551230002").unwrap(),
                    caller: PhoneNumber::parse_e164("+15551230001"),
                    received_at_ms: 1_795_694_700_000,
                    samples: &samples,
                    sample_rate: 8000,
                    encoding: boxless_store::Encoding::Pcm16,
                },
                |_| "t".into(),
            )
            .unwrap();
        let link = store.web_link(&m.id).unwrap();
        let path = link
            .strip_prefix("https://vm.example.net")
            .unwrap()
            .to_string();
        let server = crate::serve(
            "127.0.0.1:0".parse().unwrap(),
            state(vec![store.clone()], vec![]),
            None,
        )
        .await
        .unwrap();
        let router = crate::serve(
            "127.0.0.1:0".parse().unwrap(),
            state(
                vec![],
                vec![
                    Remote {
                        id: "ms1".into(),
                        http: server,
                    },
                    // A server that is down.
                    Remote {
                        id: "ms9".into(),
                        http: "127.0.0.1:9".parse().unwrap(),
                    },
                ],
            ),
            None,
        )
        .await
        .unwrap();

        for at in [server, router] {
            let a = req(at, "GET", &path, &[], &[]).await;
            assert_eq!(a.status, 200, "{}", text(&a));
            let page = text(&a);
            assert!(
                page.contains("+15551230001") && page.contains("0:03"),
                "{page}"
            );
            assert!(a.body.len() < 30 * 1024);
            assert!(
                a.header("content-security-policy")
                    .unwrap()
                    .starts_with("default-src 'none'")
            );
            assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
            assert_eq!(a.header("cache-control"), Some("no-store"));
            // A part of the audio: 206 with its range; not heard yet.
            let a = req(
                at,
                "GET",
                &format!("{path}/audio"),
                &[("Range", "bytes=0-99")],
                &[],
            )
            .await;
            assert_eq!(a.status, 206);
            assert_eq!(a.body.len(), 100);
            assert!(a.body.starts_with(b"RIFF"));
            assert_eq!(a.header("content-range"), Some("bytes 0-99/48044"));
            assert_eq!(a.header("cache-control"), Some("private, no-store"));
            // The page's own fetch to the end does not mark it either: its script reports the end.
            let a = req(at, "GET", &format!("{path}/audio?via=page"), &[], &[]).await;
            assert_eq!((a.status, a.body.len()), (200, 48_044));
            assert_ne!(
                store.get(&m.id).unwrap().unwrap().state,
                MessageState::Heard
            );
        }
        // Played to the end (the script's report), through the router.
        let a = req(
            router,
            "POST",
            &format!("{path}/heard"),
            &[("Origin", "https://vm.example.net")],
            &[],
        )
        .await;
        assert_eq!(a.status, 204);
        assert_eq!(
            store.get(&m.id).unwrap().unwrap().state,
            MessageState::Heard
        );
        // Another site's form is refused.
        let a = req(
            router,
            "POST",
            &format!("{path}/save"),
            &[("Origin", "https://evil.example")],
            &[],
        )
        .await;
        assert_eq!(a.status, 403);
        let a = req(
            router,
            "POST",
            &format!("{path}/save"),
            &[("Origin", "https://vm.example.net")],
            &[],
        )
        .await;
        assert_eq!(a.status, 303);
        assert_eq!(
            a.header("location"),
            Some(format!("../{}", path.rsplit('/').next().unwrap()).as_str())
        );
        assert_eq!(
            store.get(&m.id).unwrap().unwrap().state,
            MessageState::Saved
        );
        assert!(text(&req(server, "GET", &path, &[], &[]).await).contains("role=\"status\""));

        // Wrong links: one 404 page, whatever is wrong, from either process.
        let wrong = format!("{}A", &path[..path.len() - 1]);
        let wrong = if wrong == path {
            format!("{}B", &path[..path.len() - 1])
        } else {
            wrong
        };
        let nf = req(server, "GET", &wrong, &[], &[]).await;
        assert_eq!(nf.status, 404);
        for p in [
            wrong.as_str(),
            "/m/ms1.short",
            "/m/nosuchserver.AAAAAAAAAAAAAAAAAAAA",
            "/m/x",
        ] {
            for at in [server, router] {
                let a = req(at, "GET", p, &[], &[]).await;
                assert_eq!((a.status, &a.body), (404, &nf.body), "{p}");
            }
        }
        // The server holding it is down: try again shortly.
        let a = req(router, "GET", "/m/ms9.AAAAAAAAAAAAAAAAAAAA", &[], &[]).await;
        assert_eq!(a.status, 503);
        assert!(text(&a).contains("Try again shortly"));
        assert_eq!(a.header("retry-after"), Some("30"));

        // Delete asks once, then the link opens nothing.
        let a = req(router, "POST", &format!("{path}/delete"), &[], &[]).await;
        assert_eq!(a.status, 200);
        assert!(text(&a).contains("name=\"confirm\" value=\"yes\""));
        assert_eq!(
            store.get(&m.id).unwrap().unwrap().state,
            MessageState::Saved
        );
        let a = req(
            router,
            "POST",
            &format!("{path}/delete"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"confirm=yes",
        )
        .await;
        assert_eq!(a.status, 200);
        assert_eq!(
            store.get(&m.id).unwrap().unwrap().state,
            MessageState::Deleted
        );
        let gone = req(server, "GET", &path, &[], &[]).await;
        assert_eq!(
            (gone.status, &gone.body),
            (404, &nf.body),
            "deleted: the same 404"
        );

        // Wrong links are limited per client (X-Forwarded-For from the trusted loopback
        // proxy), before any lookup; other clients are untouched.
        let guesser = [("X-Forwarded-For", "198.51.100.7")];
        for i in 0..WRONG_PER_MINUTE {
            let a = req(router, "GET", &wrong, &guesser, &[]).await;
            assert_eq!(a.status, 404, "attempt {i}");
        }
        let a = req(router, "GET", &wrong, &guesser, &[]).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.header("retry-after"), Some("60"));
        let a = req(server, "GET", &wrong, &guesser, &[]).await;
        assert_eq!(a.status, 429, "the server counted them too");
        let a = req(
            router,
            "GET",
            &wrong,
            &[("X-Forwarded-For", "203.0.113.5")],
            &[],
        )
        .await;
        assert_eq!(a.status, 404, "another client is not limited");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
