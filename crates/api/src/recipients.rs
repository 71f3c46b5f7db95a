//! `PUT/GET/DELETE /api/v1/recipients/{number}`: a recipient's preferences (docs/http.md,
//! "Routes"; docs/sms.md, "Channels and fallback"). Writes need an admin token (the auth layer).

use crate::schema::{ErrorBody, RecipientDeleted, RecipientView};
use crate::{ApiState, error};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use boxless_control::{Recipients, RecipientsError};
use boxless_core::PhoneNumber;
use boxless_core::recipient::{Prefs, PrefsInput};

/// Bodies larger than this are refused: an entry is a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

/// The number in the path and where entries live, or the answer that says what is wrong.
pub(crate) fn target<'a>(
    s: &'a ApiState,
    raw: &str,
) -> Result<(PhoneNumber, &'a Recipients), Box<Response>> {
    let n = PhoneNumber::parse_e164(raw.trim()).ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "number must be E.164, e.g. +15551230002 (write + as %2B in a URL)",
        ))
    })?;
    let r = s.recipients.as_ref().ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this process keeps no recipients' preferences; ask the router's API",
        ))
    })?;
    Ok((n, r))
}

pub(crate) fn unavailable(e: RecipientsError) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "recipients_unavailable",
        &e.to_string(),
    )
}

/// An entry as the API shows it.
pub fn json_prefs(n: PhoneNumber, p: &Prefs) -> RecipientView {
    let i = p.input();
    RecipientView {
        number: Some(n.to_string()),
        email: i.email,
        webhook_url: i.webhook_url,
        language: i.language,
        channels: i.channels,
        opted_out: i.opted_out,
        notify_numbers: i.notify_numbers,
    }
}

const NUMBER: &str = "The recipient's number, E.164 (`+` written `%2B`)";

/// `GET /api/v1/recipients/{number}`: a recipient's entry.
#[utoipa::path(get, path = "/api/v1/recipients/{number}", tag = "recipients", operation_id = "get_recipient",
    params(("number" = String, Path, description = NUMBER)),
    responses(
        (status = 200, description = "The entry", body = RecipientView),
        (status = 404, description = "No entry (SMS only, language from the country code)", body = ErrorBody),
        (status = 503, description = "The recipients' bucket cannot be reached", body = ErrorBody)))]
pub(crate) async fn get(State(s): State<ApiState>, Path(raw): Path<String>) -> Response {
    let (n, r) = match target(&s, &raw) {
        Ok(t) => t,
        Err(e) => return *e,
    };
    match r.get(n).await {
        Ok(Some(p)) => axum::Json(json_prefs(n, &p)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no entry for this number: SMS only, language from the country code",
        ),
        Err(e) => unavailable(e),
    }
}

/// `PUT /api/v1/recipients/{number}`: sets a recipient's entry (admin token).
#[utoipa::path(put, path = "/api/v1/recipients/{number}", tag = "recipients", operation_id = "put_recipient",
    params(("number" = String, Path, description = NUMBER)),
    request_body(content = RecipientView, description = "The entry, without `number`; at most 16 KiB"),
    responses(
        (status = 200, description = "The entry as stored", body = RecipientView),
        (status = 400, description = "A field that is wrong, named", body = ErrorBody),
        (status = 413, description = "More than 16 KiB", body = ErrorBody),
        (status = 503, description = "The recipients' bucket cannot be reached", body = ErrorBody)))]
pub(crate) async fn put(
    State(s): State<ApiState>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let (n, r) = match target(&s, &raw) {
        Ok(t) => t,
        Err(e) => return *e,
    };
    if body.len() > MAX_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "an entry is at most 16 KiB of JSON",
        );
    }
    let input: PrefsInput = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!(
                    "the body must be a JSON object with email, webhook_url, language, channels, opted_out, notify_numbers: {e}"
                ),
            );
        }
    };
    let prefs = match Prefs::parse(n, input) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
    };
    match r.put(n, prefs.clone()).await {
        Ok(()) => axum::Json(json_prefs(n, &prefs)).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `DELETE /api/v1/recipients/{number}`: removes a recipient's entry (admin token).
#[utoipa::path(delete, path = "/api/v1/recipients/{number}", tag = "recipients", operation_id = "delete_recipient",
    params(("number" = String, Path, description = NUMBER)),
    responses(
        (status = 200, description = "Removed", body = RecipientDeleted),
        (status = 404, description = "No entry", body = ErrorBody),
        (status = 503, description = "The recipients' bucket cannot be reached", body = ErrorBody)))]
pub(crate) async fn delete(State(s): State<ApiState>, Path(raw): Path<String>) -> Response {
    let (n, r) = match target(&s, &raw) {
        Ok(t) => t,
        Err(e) => return *e,
    };
    match r.delete(n).await {
        Ok(true) => axum::Json(RecipientDeleted {
            number: n.to_string(),
            deleted: true,
        })
        .into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no entry for this number",
        ),
        Err(e) => unavailable(e),
    }
}
