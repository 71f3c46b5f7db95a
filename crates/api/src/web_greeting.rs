//! "Your greeting" on the message page (docs/http.md, "Web playback"): the message's web
//! link is the recipient's key, so whoever holds it may hear, replace or remove the
//! recipient's own greeting, with the same rules as Save and Delete (the same-origin
//! check, the per-source limit on wrong links, a router sending the request to the server
//! named in the token). An upload is the form's file (`multipart/form-data`, no script
//! needed) or a WAV body, read as the API reads one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxless_core::PhoneNumber;
use boxless_core::recipient::GreetingKind;

use crate::ApiState;
use crate::greetings::{report_to, ulaw_from_wav, wav_of};
use crate::page;
use crate::web::{Opened, Peer, html, incoming, language, open, open_post, private, unavailable};
use boxless_store::GreetingChange;

/// An upload from the page, at most: a phone's WAV of 30 s at 44.1 kHz stereo is 5.3 MB.
/// Lower than the API's (16 MiB): these routes take no bearer token.
pub(crate) const MAX_UPLOAD: usize = 8 * 1024 * 1024;

/// The page's greeting is the no-answer one: the busy one is the operator's (API).
const KIND: GreetingKind = GreetingKind::NoAnswer;

/// True when `n` has a greeting of its own (read from this process's copy).
pub(crate) async fn has(s: &ApiState, n: PhoneNumber) -> bool {
    let Some(r) = &s.recipients else {
        return false;
    };
    let copy = r.copy().clone();
    tokio::task::spawn_blocking(move || copy.greeting_version(n, &[KIND]))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
        .is_some()
}

/// Back to the message's page (relative: it works under any path prefix of base_url).
fn back(s: &ApiState, to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    private(&s.web, r.headers_mut());
    r
}

/// `GET /m/{token}/greeting`: the recipient's greeting, 16-bit PCM WAV.
pub(crate) async fn get(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let req = incoming(
        Method::GET,
        format!("/m/{raw}/greeting"),
        &headers,
        &[],
        peer,
    );
    let m = match open(&s, &raw, req).await {
        Opened::Here(_, m, _) => m,
        Opened::Answer(r) => return r,
    };
    let Some(r) = &s.recipients else {
        return unavailable(&s.web);
    };
    match r.greeting(m.recipient, KIND).await {
        Ok(Some(ulaw)) => {
            let mut resp = ([(header::CONTENT_TYPE, "audio/wav")], wav_of(&ulaw)).into_response();
            private(&s.web, resp.headers_mut());
            resp
        }
        Ok(None) => {
            let mut resp = StatusCode::NOT_FOUND.into_response();
            private(&s.web, resp.headers_mut());
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e, "web: greeting unavailable");
            unavailable(&s.web)
        }
    }
}

/// The WAV in a form's `greeting` field, or the body itself when it is not a form.
async fn file(headers: &HeaderMap, body: Bytes) -> Result<Bytes, String> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("multipart/form-data") {
        return Ok(body);
    }
    let boundary = multer::parse_boundary(ctype).map_err(|e| e.to_string())?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
        if field.name() == Some("greeting") {
            return field.bytes().await.map_err(|e| e.to_string());
        }
    }
    Err("the form has no greeting file".into())
}

/// `POST /m/{token}/greeting`: a new greeting from the page.
pub(crate) async fn post(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let code = e.status();
            return html(
                &s.web,
                code,
                page::greeting_refused(&raw, "The file is larger than 8 MB.", Default::default()),
            );
        }
    };
    let (store, m, token) = match open_post(&s, &raw, "greeting", peer, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(r) = &s.recipients else {
        return unavailable(&s.web);
    };
    let lang = language(&s, &m).await;
    let refused = |code: StatusCode, why: &str| {
        html(
            &s.web,
            code,
            page::greeting_refused(token.as_str(), why, lang),
        )
    };
    let wav = match file(&headers, body).await {
        Ok(w) => w,
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e),
    };
    let ulaw = match ulaw_from_wav(&wav, s.greeting_max_seconds) {
        Ok(u) => u,
        Err(e) if e.too_large() => return refused(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        Err(e) => return refused(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let seconds = ulaw.len() as f64 / 8000.0;
    if let Err(e) = r.put_greeting(m.recipient, KIND, ulaw).await {
        tracing::warn!(error = %e, "web: greeting not kept");
        return unavailable(&s.web);
    }
    report_to(
        &store,
        GreetingChange::Set { seconds },
        m.recipient,
        KIND,
        "page",
    );
    back(&s, &format!("../{}", token.as_str()))
}

/// `POST /m/{token}/greeting/delete`: back to the standard greeting.
pub(crate) async fn delete(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Response {
    let (store, m, token) = match open_post(&s, &raw, "greeting/delete", peer, &headers, &[]).await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(r) = &s.recipients else {
        return unavailable(&s.web);
    };
    match r.delete_greeting(m.recipient, KIND).await {
        Ok(true) => report_to(&store, GreetingChange::Removed, m.recipient, KIND, "page"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "web: greeting not removed");
            return unavailable(&s.web);
        }
    }
    back(&s, &format!("../../{}", token.as_str()))
}
