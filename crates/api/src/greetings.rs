//! `PUT/GET/DELETE /api/v1/recipients/{number}/greeting[?for=busy]`: a recipient's own
//! greeting (docs/http.md, "A recipient's greeting"). Writes need an admin token (the auth
//! layer). An upload is any WAV (`boxless_media::upload`), kept as 8 kHz µ-law; `GET` gives
//! 16-bit PCM WAV, which every player reads.
//!
//! A change is reported as an event (`greeting.set`, `greeting.removed`) by a messaging
//! server, whose webhook sends the events: a process with servers writes it to its first
//! server's store; a router, which has none, hands the write to a server that is up.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxless_core::recipient::GreetingKind;
use boxless_core::{PhoneNumber, now_ms};
use boxless_media::Law;
use boxless_media::upload::greeting_from_wav;
use boxless_store::GreetingChange;
use boxless_store::wav::{Encoding, encode};
use serde::Deserialize;

use crate::schema::{ErrorBody, GreetingDeleted, GreetingView};
use crate::{ApiState, authorization, error};

/// An upload larger than this is refused before it is read: 60 s of 48 kHz stereo 32-bit
/// float is 23 MB; 16 MiB takes any greeting a phone or a browser records.
pub const MAX_UPLOAD: usize = 16 * 1024 * 1024;

/// How long a router waits for the server it hands a write to.
const HAND_OVER: std::time::Duration = std::time::Duration::from_secs(10);

/// `?for=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GreetingQuery {
    /// `no-answer` (the default: every caller) or `busy` (a caller forwarded on busy).
    #[serde(rename = "for")]
    pub for_: Option<String>,
}

impl GreetingQuery {
    fn kind(&self) -> Result<GreetingKind, Box<Response>> {
        match self.for_.as_deref() {
            None | Some("") => Ok(GreetingKind::NoAnswer),
            Some(k) => GreetingKind::parse(k).ok_or_else(|| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "for must be no-answer (the default) or busy",
                ))
            }),
        }
    }
}

/// An upload as the greeting is kept: 8 kHz µ-law.
pub(crate) fn ulaw_from_wav(
    wav: &[u8],
    max_seconds: u32,
) -> Result<Vec<u8>, boxless_media::upload::UploadError> {
    Ok(greeting_from_wav(wav, max_seconds)?
        .iter()
        .map(|&x| Law::Ulaw.encode(x))
        .collect())
}

/// A kept greeting as 16-bit PCM WAV, which every player reads.
pub(crate) fn wav_of(ulaw: &[u8]) -> Vec<u8> {
    let samples: Vec<i16> = ulaw.iter().map(|&b| Law::Ulaw.decode(b)).collect();
    encode(&samples, 8000, Encoding::Pcm16)
}

/// The number, where greetings live and which one, or the answer that says what is wrong.
fn target<'a>(
    s: &'a ApiState,
    raw: &str,
    q: &GreetingQuery,
) -> Result<(PhoneNumber, &'a boxless_control::Recipients, GreetingKind), Box<Response>> {
    let (n, r) = crate::recipients::target(s, raw)?;
    Ok((n, r, q.kind()?))
}

const NUMBER: &str = "The recipient's number, E.164 (`+` written `%2B`)";

/// `GET /api/v1/recipients/{number}/greeting`: the greeting as 16-bit PCM WAV, 8 kHz mono.
#[utoipa::path(get, path = "/api/v1/recipients/{number}/greeting", tag = "recipients", operation_id = "get_greeting",
    params(("number" = String, Path, description = NUMBER), GreetingQuery),
    responses(
        (status = 200, description = "The greeting, 16-bit PCM WAV at 8 kHz", content_type = "audio/wav"),
        (status = 400, description = "A number or `for` that is wrong", body = ErrorBody),
        (status = 404, description = "No greeting of this kind: callers hear the default", body = ErrorBody),
        (status = 503, description = "The greetings' bucket cannot be reached", body = ErrorBody)))]
pub(crate) async fn get(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<GreetingQuery>,
) -> Response {
    let (n, r, kind) = match target(&s, &raw, &q) {
        Ok(t) => t,
        Err(e) => return *e,
    };
    match r.greeting(n, kind).await {
        Ok(Some(ulaw)) => ([(header::CONTENT_TYPE, "audio/wav")], wav_of(&ulaw)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "no {} greeting for this number: callers hear the default",
                kind.as_str()
            ),
        ),
        Err(e) => crate::recipients::unavailable(e),
    }
}

/// `PUT /api/v1/recipients/{number}/greeting`: sets the greeting from a WAV (admin token).
#[utoipa::path(put, path = "/api/v1/recipients/{number}/greeting", tag = "recipients", operation_id = "put_greeting",
    params(("number" = String, Path, description = NUMBER), GreetingQuery),
    request_body(content = Vec<u8>, content_type = "audio/wav",
        description = "A WAV: PCM (8 to 32 bits), float, µ-law or A-law; 4 to 192 kHz; 1 to 8 channels; 0.5 s to messages.greeting_max_seconds; at most 16 MiB"),
    responses(
        (status = 200, description = "Kept; callers hear it from now on", body = GreetingView),
        (status = 400, description = "Not a WAV taken, named", body = ErrorBody),
        (status = 413, description = "Longer than messages.greeting_max_seconds, or over 16 MiB", body = ErrorBody),
        (status = 503, description = "The greetings' bucket cannot be reached", body = ErrorBody)))]
pub(crate) async fn put(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<GreetingQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "a greeting upload is at most 16 MiB",
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.body_text()),
    };
    let (n, r, kind) = match target(&s, &raw, &q) {
        Ok(t) => t,
        Err(e) => return *e,
    };
    if s.stores.is_empty() && !s.remotes.is_empty() {
        return hand_over(&s, &headers, "PUT", n, kind, &body).await;
    }
    let ulaw = match ulaw_from_wav(&body, s.greeting_max_seconds) {
        Ok(x) => x,
        Err(e) => {
            let (code, kind) = if e.too_large() {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            } else {
                (StatusCode::BAD_REQUEST, "bad_request")
            };
            return error(code, kind, &e.to_string());
        }
    };
    let view = GreetingView {
        number: n.to_string(),
        kind: kind.as_str().to_string(),
        seconds: ulaw.len() as f64 / 8000.0,
    };
    if let Err(e) = r.put_greeting(n, kind, ulaw).await {
        return crate::recipients::unavailable(e);
    }
    report(
        &s,
        GreetingChange::Set {
            seconds: view.seconds,
        },
        n,
        kind,
    );
    axum::Json(view).into_response()
}

/// `DELETE /api/v1/recipients/{number}/greeting`: back to the default (admin token).
#[utoipa::path(delete, path = "/api/v1/recipients/{number}/greeting", tag = "recipients", operation_id = "delete_greeting",
    params(("number" = String, Path, description = NUMBER), GreetingQuery),
    responses(
        (status = 200, description = "Removed: callers hear the default again", body = GreetingDeleted),
        (status = 404, description = "No greeting of this kind", body = ErrorBody),
        (status = 503, description = "The greetings' bucket cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<GreetingQuery>,
    headers: HeaderMap,
) -> Response {
    let (n, r, kind) = match target(&s, &raw, &q) {
        Ok(t) => t,
        Err(e) => return *e,
    };
    if s.stores.is_empty() && !s.remotes.is_empty() {
        return hand_over(&s, &headers, "DELETE", n, kind, &[]).await;
    }
    match r.delete_greeting(n, kind).await {
        Ok(true) => {
            report(&s, GreetingChange::Removed, n, kind);
            axum::Json(GreetingDeleted {
                number: n.to_string(),
                kind: kind.as_str().to_string(),
                deleted: true,
            })
            .into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no {} greeting for this number", kind.as_str()),
        ),
        Err(e) => crate::recipients::unavailable(e),
    }
}

/// Writes the change's event to this process's first server's store.
fn report(s: &ApiState, change: GreetingChange, n: PhoneNumber, kind: GreetingKind) {
    if let Some(store) = s.stores.first() {
        report_to(store, change, n, kind, "api");
    }
}

/// Writes a greeting's event to `store`; `by`: `api`, `page`. A failure is logged: the
/// greeting is kept all the same.
pub(crate) fn report_to(
    store: &boxless_store::Store,
    change: GreetingChange,
    n: PhoneNumber,
    kind: GreetingKind,
    by: &str,
) {
    if let Err(e) = store.write_greeting_event(change, n, kind, by, now_ms()) {
        tracing::error!(error = %e, ?change, "greetings: the event could not be written");
    }
}

/// A router's write, handed to the first server that is up and answers: the servers write
/// the events.
async fn hand_over(
    s: &ApiState,
    headers: &HeaderMap,
    method: &str,
    n: PhoneNumber,
    kind: GreetingKind,
    body: &[u8],
) -> Response {
    let now = now_ms();
    let at = s.board.status_time(now);
    let up = |id: &str| {
        s.board
            .slots
            .iter()
            .any(|slot| slot.id == id && slot.view().available(at, s.ttl_ms))
    };
    let path = format!(
        "/api/v1/recipients/{}/greeting?for={}",
        n.to_string().replace('+', "%2B"),
        kind.as_str()
    );
    let auth = authorization(headers);
    let mut hdrs: Vec<(&str, &str)> = vec![("Content-Type", "audio/wav")];
    if let Some(a) = auth.as_deref() {
        hdrs.push(("Authorization", a));
    }
    let mut last = String::from("no messaging server is up");
    // Servers that are up first, then the others: a server's status may lag its API.
    let mut order: Vec<&crate::Remote> = s.remotes.iter().filter(|r| up(&r.id)).collect();
    order.extend(s.remotes.iter().filter(|r| !up(&r.id)));
    for r in order {
        match boxless_net::http::send(&crate::target(s, r), method, &path, &hdrs, body, HAND_OVER)
            .await
        {
            Ok(a) if a.status < 500 => {
                let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let ctype = a.content_type.unwrap_or_else(|| "application/json".into());
                return (code, [(header::CONTENT_TYPE, ctype)], a.body).into_response();
            }
            Ok(a) => last = format!("server {}: HTTP {}", r.id, a.status),
            Err(e) => last = format!("server {}: {e}", r.id),
        }
    }
    error(StatusCode::BAD_GATEWAY, "server_unreachable", &last)
}
