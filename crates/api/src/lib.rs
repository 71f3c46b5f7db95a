//! The Boxless HTTP API (docs/http.md): `/healthz`, `/metrics`,
//! `/api/v1/servers`, `/api/v1/messages`, audio download and delete; web playback
//! (`/m/{token}`) and the operator's `/status` page.
#![warn(missing_docs)]

pub mod auth;
pub mod greetings;
pub mod openapi;
mod page;
pub mod prometheus;
pub mod recipients;
pub mod schema;
mod status;
pub mod web;
mod web_greeting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use boxless_core::{ControlHealth, PhoneNumber, StatusBoard, now_ms};
use boxless_store::{MessageInfo, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::Value;

/// What the API reads.
#[derive(Clone)]
pub struct ApiState {
    /// Server status.
    pub board: Arc<StatusBoard>,
    /// Stores of the servers in this process.
    pub stores: Vec<Arc<Store>>,
    /// Status TTL (ms).
    pub ttl_ms: u64,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// False once the process drains.
    pub taking_calls: Arc<AtomicBool>,
    /// Servers in other processes whose HTTP API this one asks (a router's API).
    pub remotes: Vec<Remote>,
    /// HTTPS to those servers with this client configuration (None: plain HTTP).
    pub remote_tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Who may call.
    pub auth: Arc<auth::Auth>,
    /// Recipients' preferences (None: this process keeps none).
    pub recipients: Option<boxless_control::Recipients>,
    /// Web playback.
    pub web: Arc<web::Web>,
    /// `messages.greeting_max_seconds`: the longest greeting an upload may hold.
    pub greeting_max_seconds: u32,
}

/// A messaging server reached through its own HTTP API.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Server id (the prefix of its message ids).
    pub id: String,
    /// Its HTTP API.
    pub http: SocketAddr,
}

/// How long the router's API waits for a server's API.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Header naming the servers whose messages are missing from a gathered answer.
pub const MISSING_HEADER: &str = "boxless-missing-servers";

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("stores", &self.stores.len())
            .finish()
    }
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    let auth = state.auth.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/servers", get(servers))
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/messages/{id}", get(message).delete(delete))
        .route("/api/v1/messages/{id}/audio", get(audio))
        .route(
            "/api/v1/recipients/{number}",
            get(recipients::get)
                .put(recipients::put)
                .delete(recipients::delete),
        )
        .route(
            "/api/v1/recipients/{number}/greeting",
            get(greetings::get)
                .put(greetings::put)
                .delete(greetings::delete)
                .layer(axum::extract::DefaultBodyLimit::max(greetings::MAX_UPLOAD)),
        )
        .route("/api/v1/activity", get(status::activity))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/status", get(status::page))
        .merge(web::routes())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/http.md",
            )
        })
        .layer(axum::middleware::from_fn_with_state(auth, auth::layer))
        .with_state(state)
}

/// `GET /api/v1/openapi.json`: this API's OpenAPI document, made from the handlers.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_json() -> Response {
    use utoipa::OpenApi as _;
    axum::Json(openapi::ApiDoc::openapi()).into_response()
}

/// Serves the API on `addr` until the runtime stops: HTTPS when `tls` is given.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> std::io::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let local = l.local_addr()?;
    let app = router(state);
    match tls {
        None => {
            tokio::spawn(async move {
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
            tracing::info!(%local, "HTTP API up");
        }
        Some(cfg) => {
            tokio::spawn(serve_tls(l, app, cfg));
            tracing::info!(%local, "HTTPS API up");
        }
    }
    Ok(local)
}

/// A TLS handshake must finish within this, so a silent client cannot hold a task.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_tls(
    l: tokio::net::TcpListener,
    app: Router,
    cfg: Arc<tokio_rustls::rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let Ok((tcp, peer)) = l.accept().await else {
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // The peer's address, as `axum::serve` gives it on plain HTTP (web playback
            // limits wrong links per source).
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let conn =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = conn
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
        });
    }
}

fn error(code: StatusCode, error: &str, detail: &str) -> Response {
    let body = schema::ErrorBody {
        error: error.to_string(),
        detail: detail.to_string(),
    };
    (code, axum::Json(body)).into_response()
}

/// Header naming a degraded control plane on `/healthz` and `/api/v1/servers`.
pub const HEALTH_HEADER: &str = "boxless-health";

/// `degraded: ...` while the control plane is down, else None.
fn degraded(s: &ApiState) -> Option<String> {
    match s.board.control.health(now_ms()) {
        ControlHealth::Ok => None,
        ControlHealth::Degraded {
            down_for_ms,
            grace_left_ms: 0,
        } => Some(format!(
            "degraded; control plane (NATS) unreachable for {} s; grace over: no server status is trusted",
            down_for_ms / 1000
        )),
        ControlHealth::Degraded {
            down_for_ms,
            grace_left_ms,
        } => Some(format!(
            "degraded; control plane (NATS) unreachable for {} s; routing on the last known status for {} s more",
            down_for_ms / 1000,
            grace_left_ms.div_ceil(1000)
        )),
    }
}

/// Adds the degraded-health header when there is one to add.
fn with_health(s: &ApiState, mut r: Response) -> Response {
    if let Some(d) = degraded(s)
        && let Ok(v) = header::HeaderValue::from_str(&d)
    {
        r.headers_mut().insert(HEALTH_HEADER, v);
    }
    r
}

/// `GET /api/v1/health`: the process's health in full.
#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "The process's health", body = schema::Health)))]
async fn health(State(s): State<ApiState>) -> Response {
    let taking = s.taking_calls.load(Ordering::Relaxed);
    let (connected, down_for_ms, grace_left_ms) = match s.board.control.health(now_ms()) {
        ControlHealth::Ok => (true, None, None),
        ControlHealth::Degraded {
            down_for_ms,
            grace_left_ms,
        } => (false, Some(down_for_ms), Some(grace_left_ms)),
    };
    let status = match (taking, connected) {
        (false, _) => "draining",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    axum::Json(schema::Health {
        status: status.to_string(),
        taking_calls: taking,
        control: schema::ControlView {
            connected,
            down_for_ms,
            grace_left_ms,
        },
    })
    .into_response()
}

/// `GET /healthz`: `ok` while the process takes calls (open, no token).
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses(
        (status = 200, description = "Taking calls; a `boxless-health: degraded; ...` header while NATS is unreachable", body = String, content_type = "text/plain"),
        (status = 503, description = "Draining", body = String, content_type = "text/plain")))]
async fn healthz(State(s): State<ApiState>) -> Response {
    if s.taking_calls.load(Ordering::Relaxed) {
        with_health(&s, (StatusCode::OK, "ok").into_response())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    }
}

/// `GET /metrics`: Prometheus text format (read token).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics_text(State(s): State<ApiState>) -> Response {
    let now = now_ms();
    let at = s.board.status_time(now);
    metrics::gauge!("boxless_control_connected").set(if s.board.control.connected() {
        1.0
    } else {
        0.0
    });
    for slot in &s.board.slots {
        let v = slot.view();
        let id = slot.id.clone();
        metrics::gauge!("boxless_server_active_calls", "server" => id.clone()).set(v.active as f64);
        metrics::gauge!("boxless_server_capacity", "server" => id.clone()).set(v.capacity as f64);
        metrics::gauge!("boxless_server_free_disk_bytes", "server" => id.clone())
            .set(v.free_disk as f64);
        metrics::gauge!("boxless_server_available", "server" => id)
            .set(if v.available(at, s.ttl_ms) { 1.0 } else { 0.0 });
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// `GET /api/v1/servers`: every messaging server as the router sees it.
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers",
    responses((status = 200, description = "The servers", body = [schema::ServerView])))]
async fn servers(State(s): State<ApiState>) -> Response {
    let now = now_ms();
    let at = s.board.status_time(now);
    let list: Vec<schema::ServerView> = s
        .board
        .slots
        .iter()
        .map(|slot| {
            let v = slot.view();
            let (me, others) = slot.serves();
            let serves = s
                .board
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, o)| (o.id == slot.id && me) || (i < 64 && others & (1 << i) != 0))
                .map(|(_, o)| o.id.clone())
                .collect();
            schema::ServerView {
                id: slot.id.clone(),
                address: slot.sip.to_string(),
                state: v.effective_state(at, s.ttl_ms).as_str().to_string(),
                active_calls: v.active,
                capacity: v.capacity,
                free_disk_bytes: v.free_disk,
                last_seen_ms: (v.last_update_ms != 0).then(|| now.saturating_sub(v.last_update_ms)),
                link_numbers: slot.pool.to_strings(),
                unreplicated: v.unreplicated,
                serves,
            }
        })
        .collect();
    with_health(&s, axum::Json(list).into_response())
}

/// `GET /api/v1/messages` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Only this recipient (E.164).
    pub recipient: Option<String>,
    /// At most this many per server (default 1000).
    pub limit: Option<usize>,
}

fn json_message(m: &MessageInfo) -> Value {
    // A struct of strings and numbers always serializes.
    serde_json::to_value(schema::MessageView::from(m)).unwrap_or(Value::Null)
}

/// The caller's `Authorization` value, passed on to the servers a router's API asks.
fn authorization(h: &HeaderMap) -> Option<String> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn target(s: &ApiState, r: &Remote) -> boxless_net::http::Target {
    boxless_net::http::Target {
        addr: r.http,
        tls: s.remote_tls.clone(),
    }
}

/// Asks every server in another process for `GET path` at once, each within
/// [`REMOTE_TIMEOUT`], with the caller's `Authorization`: the JSON of those that answered
/// `200`, and the ids of the others.
async fn ask_remotes(
    s: &ApiState,
    headers: &HeaderMap,
    path: &str,
) -> (Vec<(String, Value)>, Vec<String>) {
    let mut asks = tokio::task::JoinSet::new();
    let auth = authorization(headers);
    for r in s.remotes.clone() {
        let (t, auth, path) = (target(s, &r), auth.clone(), path.to_string());
        asks.spawn(async move {
            let got =
                boxless_net::http::request_with(&t, "GET", &path, auth.as_deref(), REMOTE_TIMEOUT)
                    .await;
            let v = match got {
                Ok(a) if a.status == 200 => serde_json::from_slice::<Value>(&a.body).ok(),
                _ => None,
            };
            (r.id, v)
        });
    }
    let (mut answers, mut missing) = (Vec::new(), Vec::new());
    while let Some(done) = asks.join_next().await {
        match done {
            Ok((id, Some(v))) => answers.push((id, v)),
            Ok((id, None)) => missing.push(id),
            Err(_) => {}
        }
    }
    (answers, missing)
}

/// `GET /api/v1/messages`: the messages of every server, newest first.
#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", params(MessagesQuery),
    responses(
        (status = 200, description = "Messages; from a router, `boxless-missing-servers` names the servers that did not answer", body = [schema::MessageView]),
        (status = 400, description = "A recipient that is not E.164", body = schema::ErrorBody)))]
async fn messages(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<MessagesQuery>,
) -> Response {
    let recipient = match q.recipient.as_deref() {
        None => None,
        Some(r) => match PhoneNumber::parse_e164(r.trim()) {
            Some(n) => Some(n),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "recipient must be E.164, e.g. +15551230002 (write + as %2B in a URL)",
                );
            }
        },
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let mut all = Vec::new();
    for st in &s.stores {
        match st
            .read(move |st| st.list(recipient, limit))
            .await
            .and_then(|r| r)
        {
            Ok(l) => all.extend(l),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store", &e.to_string()),
        }
    }
    let mut list: Vec<Value> = all.iter().map(json_message).collect();
    // Servers in other processes: asked at once, each within a bound.
    let query = match recipient {
        Some(r) => format!("/api/v1/messages?recipient=%2B{}&limit={limit}", r.digits()),
        None => format!("/api/v1/messages?limit={limit}"),
    };
    let (answers, mut missing) = ask_remotes(&s, &headers, &query).await;
    for (id, v) in answers {
        match v {
            Value::Array(items) => list.extend(items),
            _ => missing.push(id),
        }
    }
    // RFC 3339 UTC times sort as text: newest first.
    list.sort_by(|a, b| {
        b["received_at"]
            .as_str()
            .cmp(&a["received_at"].as_str())
            .then(a["id"].as_str().cmp(&b["id"].as_str()))
    });
    // A server handing its messages back lists them beside the one that answered for
    // it, for a moment: each message once.
    list.dedup_by(|a, b| a["id"] == b["id"]);
    // A silent server another one answers for is not missing: its messages came from
    // that one (docs/high-availability.md).
    let silent = missing.clone();
    missing.retain(|id| match holder(&s, id) {
        Holder::Remote(r) => r.id == *id || silent.contains(&r.id),
        _ => true,
    });
    let mut resp = axum::Json(list).into_response();
    if !missing.is_empty() {
        missing.sort();
        tracing::warn!(servers = %missing.join(","), "messages of some servers missing: their API did not answer");
        if let Ok(v) = missing.join(",").parse() {
            resp.headers_mut().insert(MISSING_HEADER, v);
        }
    }
    resp
}

/// Forwards a request about message `id` to the remote server that holds it, with the
/// caller's `Authorization`: the server judges it again.
async fn forward(
    s: &ApiState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    id: &str,
) -> Option<Response> {
    let Holder::Remote(r) = holder(s, server_of(s, id)?) else {
        return None;
    };
    let auth = authorization(headers);
    Some(
        match boxless_net::http::request_with(
            &target(s, r),
            method,
            path,
            auth.as_deref(),
            REMOTE_TIMEOUT,
        )
        .await
        {
            Ok(a) => {
                let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let ctype = a.content_type.unwrap_or_else(|| "application/json".into());
                (code, [(header::CONTENT_TYPE, ctype)], a.body).into_response()
            }
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                "server_unreachable",
                &format!("server {}: {e}", r.id),
            ),
        },
    )
}

/// Where the messages of one server are answered for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Holder<'a> {
    /// A store of this process.
    Local(&'a Arc<Store>),
    /// A server in another process.
    Remote(&'a Remote),
    /// Neither.
    Nowhere,
}

/// Who answers for server `server`'s messages now: the server itself, or the one that took
/// it over while it is lost or catching up (docs/high-availability.md); with nobody
/// serving it, the server itself (which then answers as it can: 503, or not at all).
pub(crate) fn holder<'a>(s: &'a ApiState, server: &str) -> Holder<'a> {
    let board = &s.board;
    let serving = board
        .slots
        .iter()
        .position(|slot| slot.id == server)
        .and_then(|i| board.serving(i, now_ms(), s.ttl_ms))
        .map_or(server, |i| board.slots[i].id.as_str());
    if let Some(st) = s.stores.iter().find(|st| st.server_id() == serving) {
        return Holder::Local(st);
    }
    match s.remotes.iter().find(|r| r.id == serving) {
        Some(r) => Holder::Remote(r),
        None => Holder::Nowhere,
    }
}

/// The server whose message `id` (`<server>-<hex>`) is: a server id may hold `-` too, so
/// the configured ids are matched, the longest first.
fn server_of<'a>(s: &'a ApiState, id: &str) -> Option<&'a str> {
    let ids = s.board.slots.iter().map(|slot| slot.id.as_str());
    let ids = ids.chain(s.stores.iter().map(|st| st.server_id()));
    ids.chain(s.remotes.iter().map(|r| r.id.as_str()))
        .filter(|sid| id.strip_prefix(sid).is_some_and(|x| x.starts_with('-')))
        .max_by_key(|sid| sid.len())
}

fn store_of<'a>(s: &'a ApiState, id: &str) -> Option<&'a Arc<Store>> {
    match holder(s, server_of(s, id)?) {
        Holder::Local(st) => Some(st),
        _ => None,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(boxless_core::util::id_byte)
}

fn no_message() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no message with that id",
    )
}

/// How a request reaches a store.
#[derive(Debug, Clone, Copy)]
enum Access {
    Read,
    Write,
}

/// Runs `f` on the store that holds message `id`, on its reader or its writer thread.
async fn with_store<T: Send + 'static>(
    s: &ApiState,
    id: &str,
    access: Access,
    f: impl FnOnce(&Store, &str) -> boxless_store::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let Some(st) = store_of(s, id).filter(|_| valid_id(id)).cloned() else {
        return Err(no_message());
    };
    let id = id.to_string();
    let job = move |st: &Store| f(st, &id);
    let res = match access {
        Access::Read => st.read(job).await,
        Access::Write => st.write(job).await,
    };
    match res.and_then(|r| r) {
        Ok(v) => Ok(v),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store",
            &e.to_string(),
        )),
    }
}

/// `GET /api/v1/messages/{id}`: one message.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages", operation_id = "get_message",
    params(("id" = String, Path, description = "The message id, `<server>-<hex>`")),
    responses(
        (status = 200, description = "The message", body = schema::MessageView),
        (status = 404, description = "No such message", body = schema::ErrorBody)))]
async fn message(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if valid_id(&id)
        && let Some(r) = forward(&s, &headers, "GET", &format!("/api/v1/messages/{id}"), &id).await
    {
        return r;
    }
    match with_store(&s, &id, Access::Read, |st, id| st.get(id)).await {
        Ok(Some(m)) => axum::Json(json_message(&m)).into_response(),
        Ok(None) => no_message(),
        Err(r) => r,
    }
}

/// `GET /api/v1/messages/{id}/audio` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AudioQuery {
    /// `original`: the file as stored (G.711 WAV when kept so); else 16-bit PCM WAV.
    pub format: Option<String>,
}

/// `GET /api/v1/messages/{id}/audio`: the recording as WAV.
#[utoipa::path(get, path = "/api/v1/messages/{id}/audio", tag = "messages",
    params(("id" = String, Path, description = "The message id"), AudioQuery),
    responses(
        (status = 200, description = "Mono 16-bit PCM WAV (8 or 16 kHz); with `format=original` the file as stored", body = Vec<u8>, content_type = "audio/wav"),
        (status = 400, description = "An unknown format", body = schema::ErrorBody),
        (status = 404, description = "No audio for that id", body = schema::ErrorBody)))]
async fn audio(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<AudioQuery>,
) -> Response {
    let original = match q.format.as_deref() {
        None | Some("pcm16") => false,
        Some("original") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "format must be `original` (the file as stored) or absent (16-bit PCM WAV)",
            );
        }
    };
    let query = if original { "?format=original" } else { "" };
    if valid_id(&id)
        && let Some(r) = forward(
            &s,
            &headers,
            "GET",
            &format!("/api/v1/messages/{id}/audio{query}"),
            &id,
        )
        .await
    {
        return r;
    }
    match with_store(&s, &id, Access::Read, move |st, id| {
        st.audio_file(id, original)
    })
    .await
    {
        Ok(Some(b)) => ([(header::CONTENT_TYPE, "audio/wav")], b).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no audio for that id (deleted or never stored)",
        ),
        Err(r) => r,
    }
}

/// `DELETE /api/v1/messages/{id}`: marks it deleted and removes its audio (admin token).
#[utoipa::path(delete, path = "/api/v1/messages/{id}", tag = "messages", operation_id = "delete_message",
    params(("id" = String, Path, description = "The message id")),
    responses(
        (status = 200, description = "Deleted", body = schema::MessageDeleted),
        (status = 403, description = "A read token", body = schema::ErrorBody),
        (status = 404, description = "No such message", body = schema::ErrorBody)))]
async fn delete(State(s): State<ApiState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if valid_id(&id)
        && let Some(r) = forward(
            &s,
            &headers,
            "DELETE",
            &format!("/api/v1/messages/{id}"),
            &id,
        )
        .await
    {
        return r;
    }
    match with_store(&s, &id, Access::Write, |st, id| st.delete(id)).await {
        Ok(true) => axum::Json(schema::MessageDeleted {
            id,
            state: "deleted".into(),
        })
        .into_response(),
        Ok(false) => no_message(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::ControlLink;

    fn state(control: ControlLink) -> ApiState {
        ApiState {
            board: Arc::new(StatusBoard {
                slots: Vec::new(),
                control,
            }),
            stores: Vec::new(),
            ttl_ms: 3000,
            metrics: crate::prometheus::builder()
                .expect("the buckets are valid")
                .build_recorder()
                .handle(),
            taking_calls: Arc::new(AtomicBool::new(true)),
            remotes: Vec::new(),
            remote_tls: None,
            auth: Arc::new(auth::Auth::default()),
            recipients: None,
            web: Arc::new(web::Web::new(
                None,
                boxless_core::PeerFilter::loopback(),
                boxless_core::recipient::Languages::default(),
                0,
                false,
            )),
            greeting_max_seconds: 30,
        }
    }

    async fn body(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn recipients_are_set_read_and_removed_and_bad_fields_are_named() {
        let dir = std::env::temp_dir().join(format!("boxless-api-rcpt-{}", now_ms()));
        let d = boxless_store::Directory::open(&dir.join("recipients.sqlite")).unwrap();
        let mut s = state(ControlLink::default());
        s.recipients = Some(boxless_control::Recipients::Local(Arc::new(d)));
        let num = || Path("+15551230002".to_string());
        let put = |b: &str| {
            recipients::put(
                State(s.clone()),
                num(),
                axum::body::Bytes::from(b.to_string()),
            )
        };
        let r = put(r#"{"email": "not an address", "channels": ["sms", "email"]}"#).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(
            body(r).await["detail"]
                .as_str()
                .unwrap()
                .contains("`email`")
        );
        let r = put(r#"{"email": "#).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "not JSON");
        let r = put(r#"{"notify_numbers": 5}"#).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a wrong type");
        let big = format!(r#"{{"email": "{}@example.net"}}"#, "a".repeat(20_000));
        let r = put(&big).await;
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = put(r#"{"colour": "blue"}"#).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "unknown fields are refused"
        );
        let r = put(r#"{"notify_numbers": ["+15551230009"], "language": "fr"}"#).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v = body(recipients::get(State(s.clone()), num()).await).await;
        assert_eq!(v["notify_numbers"], serde_json::json!(["+15551230009"]));
        assert_eq!(v["language"], "fr");
        assert_eq!(v["channels"], serde_json::json!(["sms"]));
        assert_eq!(v["opted_out"], false);
        let r = recipients::get(State(s.clone()), Path("12".into())).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = recipients::delete(State(s.clone()), num()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = recipients::get(State(s.clone()), num()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_control_plane_outage_is_reported_as_degraded_health() {
        let link = ControlLink::nats(30_000, now_ms() - 5_000);
        let s = state(link);
        let r = healthz(State(s.clone())).await;
        assert_eq!(r.status(), StatusCode::OK, "calls are still taken");
        let h = r.headers()[HEALTH_HEADER].to_str().unwrap().to_string();
        assert!(
            h.starts_with("degraded; control plane (NATS) unreachable for 5 s"),
            "{h}"
        );
        let v = body(health(State(s.clone())).await).await;
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["control"]["connected"], false);
        assert!(v["control"]["grace_left_ms"].as_u64().unwrap() > 20_000);
        s.taking_calls.store(false, Ordering::Relaxed);
        assert_eq!(body(health(State(s)).await).await["status"], "draining");

        // Past the grace the header says nothing is trusted any more.
        let s = state(ControlLink::nats(1_000, now_ms() - 5_000));
        let r = healthz(State(s)).await;
        let h = r.headers()[HEALTH_HEADER].to_str().unwrap();
        assert!(h.contains("grace over"), "{h}");

        // Connected (or in-process): plain ok, no header.
        let s = state(ControlLink::default());
        let r = healthz(State(s.clone())).await;
        assert!(r.headers().get(HEALTH_HEADER).is_none());
        assert_eq!(body(health(State(s)).await).await["status"], "ok");
    }
}
