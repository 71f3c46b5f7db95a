//! Wiring: builds the router, the messaging servers, their notifiers and the HTTP API from
//! a checked configuration — all in one process (`serve`), or one part per process
//! (`router`, `server`) with status over NATS — and drains them on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use boxless_control::Recipients;
use boxless_core::config::{ControlBackend, SmsTransport};
use boxless_core::{Checked, ControlLink, Rng, ServerSlot, ServerSpec, StatusBoard, now_ms};
use boxless_media::Prompts;
use boxless_notify::{Limits, ReceiptBook};
use boxless_router::RouterCore;
use boxless_router::proxy::ProxySettings;
use boxless_server::MessagingServer;
use boxless_store::Directory;
use boxless_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

/// A running process: addresses actually bound and handles for tests and shutdown.
pub struct Running {
    /// The router's SIP address (the server's own in a `server` process).
    pub router: SocketAddr,
    /// The HTTP API address.
    pub http: SocketAddr,
    /// The messaging servers.
    pub servers: Vec<Arc<MessagingServer>>,
    /// Cleared when draining.
    pub taking_calls: Arc<AtomicBool>,
    /// Where the servers' status goes (NATS), for their last word when they stop.
    pub control: Option<(boxless_control::Client, Arc<StatusBoard>)>,
}

/// Every configured server's slot, each down until its status arrives; `remote` when the
/// statuses come over NATS (the link's outages are then bridged for the configured grace).
fn board_of(cfg: &Checked, remote: bool) -> Arc<StatusBoard> {
    let control = if remote {
        ControlLink::nats(cfg.config.control.outage_grace_seconds * 1000, now_ms())
    } else {
        ControlLink::default()
    };
    Arc::new(StatusBoard {
        control,
        slots: cfg
            .servers
            .iter()
            .map(|s| {
                ServerSlot::new(
                    &s.config.id,
                    s.config.listen,
                    s.pool.clone(),
                    s.config.capacity,
                )
                .with_weight(s.config.weight)
                .with_tls(s.config.tls_listen)
            })
            .collect(),
    })
}

/// What the servers of one process share.
struct Shared<'a> {
    board: &'a Arc<StatusBoard>,
    prompts: &'a Arc<Prompts>,
    /// Receipts for any of them may arrive on any one's SMPP bind.
    book: &'a Arc<ReceiptBook>,
    recipients: &'a Recipients,
    /// The limits counted across the cluster.
    limits: &'a Arc<Limits>,
    client: Option<&'a boxless_control::Client>,
}

/// The process's cluster-wide limits: in memory on one box, in JetStream over NATS (with
/// the replicas of the messages when they are replicated, else of the control plane's
/// buckets).
fn limits(cfg: &Checked, client: Option<&boxless_control::Client>) -> Arc<Limits> {
    let c = &cfg.config;
    match client {
        None => Limits::local(),
        Some(client) => {
            let replicas = match c.store.replication {
                boxless_core::config::Replication::Jetstream => c.store.replicas,
                boxless_core::config::Replication::None => c.control.kv_replicas,
            };
            let lockout = Duration::from_secs(u64::from(c.retrieval.lockout_minutes) * 60);
            Limits::nats(client.clone(), replicas, cfg.servers.len() as u32, lockout)
        }
    }
}

/// Opens one server's store, starts its notifier and its SIP side.
async fn start_server(
    cfg: &Checked,
    spec: &ServerSpec,
    shared: &Shared<'_>,
) -> anyhow::Result<(Arc<MessagingServer>, Arc<Store>)> {
    let Shared {
        board,
        prompts,
        book,
        recipients,
        limits,
        client,
    } = *shared;
    let c = &cfg.config;
    let id = &spec.config.id;
    let dir = c.data_dir.join(id);
    let store = Arc::new(
        Store::open(&dir, id, spec.pool.clone())
            .with_context(|| format!("opening the store of server `{id}` in {}", dir.display()))?,
    );
    let replicate = c.store.replication == boxless_core::config::Replication::Jetstream;
    store
        .replicate(replicate)
        .with_context(|| format!("store of server `{id}`: replication's bookkeeping"))?;
    if replicate {
        // Until it knows whether another server answered for it meanwhile, nothing of
        // its own is notified (boxless_server::takeover).
        store.hold_notices(true);
    }
    book.add(store.clone());
    if let Some(base) = &cfg.web.base_url {
        // Each message from now on gets a web link; the key lives in the server's data dir.
        store.enable_web(base.clone()).with_context(|| {
            format!(
                "key `web.base_url`: the web link key of server `{id}` in {}",
                dir.display()
            )
        })?;
    }
    let notifier = boxless_notify::start(cfg, id, &store, book, recipients, limits)?;
    let server = MessagingServer::start(
        cfg,
        spec,
        board.clone(),
        store.clone(),
        recipients.clone(),
        notifier,
        prompts.clone(),
    )
    .await
    .with_context(|| format!("starting server `{id}` on {}", spec.config.listen))?;
    if let (true, Some(client)) = (replicate, client) {
        let replication = boxless_server::replication::Replication::start(
            client.clone(),
            id,
            store.clone(),
            c.store.replicas,
            REPLICA_DEADLINE,
        );
        server.replicate(replication.clone());
        boxless_server::takeover::Takeover::start(
            server.clone(),
            replication,
            client.clone(),
            Duration::from_secs(c.store.takeover_after_seconds),
            c.store.replicas,
            REPLICA_DEADLINE,
        );
    }
    Ok((server, store))
}

/// Bounds each JetStream call of replication, and the wait a caller's `200` may add.
const REPLICA_DEADLINE: Duration = Duration::from_secs(2);

async fn start_router(cfg: &Checked, board: &Arc<StatusBoard>) -> anyhow::Result<SocketAddr> {
    let c = &cfg.config;
    let core = Arc::new(RouterCore {
        board: board.clone(),
        numbering: cfg.numbering.clone(),
        mode: c.router.mode,
        ttl_ms: c.control.ttl_seconds * 1000,
        retry_after: c.router.retry_after_seconds,
        redirect_contacts: c.router.redirect_contacts,
        gate: boxless_router::decide::Gate::new(
            cfg.peers.clone(),
            c.sip.max_invites_per_second_per_peer,
            Rng::from_entropy().next_u64(),
        ),
    });
    let tls = match cfg.sip_tls {
        Some(addr) => Some((
            addr,
            boxless_net::tls::sip_server_config(
                std::path::Path::new(&c.sip.tls_cert),
                std::path::Path::new(&c.sip.tls_key),
            )
            .map_err(|e| anyhow::anyhow!("sip.tls_cert / sip.tls_key: {e}"))?,
        )),
        None => None,
    };
    boxless_router::start(
        core,
        boxless_router::RouterSettings {
            tls,
            probe: (c.router.probe_interval_ms > 0).then(|| boxless_router::probe::ProbeSettings {
                interval: Duration::from_millis(c.router.probe_interval_ms),
                timeout: Duration::from_millis(c.router.probe_timeout_ms),
                down_after: c.router.probe_down_after,
                up_after: c.router.probe_up_after,
            }),
            listen: c.router.listen,
            max_message: c.sip.max_message_bytes,
            rng_seed: c.router.rng_seed,
            proxy: ProxySettings {
                answer_timeout: Duration::from_millis(c.router.proxy_answer_ms),
                t1: Duration::from_millis(c.sip.t1_ms),
                record_route: c.router.record_route,
                tls_local: cfg.sip_tls,
                ..ProxySettings::default()
            },
        },
    )
    .await
    .with_context(|| format!("starting the router on {}", c.router.listen))
}

async fn start_api(
    cfg: &Checked,
    listen: SocketAddr,
    board: Arc<StatusBoard>,
    stores: Vec<Arc<Store>>,
    recipients: Recipients,
    metrics: PrometheusHandle,
) -> anyhow::Result<(SocketAddr, Arc<AtomicBool>)> {
    // Cleared when the process drains; /healthz reads it.
    let taking_calls = Arc::new(AtomicBool::new(true));
    // A router process asks every server's own API for messages.
    let remotes = if stores.is_empty() {
        cfg.servers
            .iter()
            .map(|s| boxless_api::Remote {
                id: s.config.id.clone(),
                http: s.config.http,
            })
            .collect()
    } else {
        Vec::new()
    };
    let h = &cfg.config.http;
    let tls = if h.tls_cert.is_empty() {
        None
    } else {
        let c = boxless_net::tls::server_config(h.tls_cert.as_ref(), h.tls_key.as_ref())
            .map_err(|e| anyhow::anyhow!("key `http.tls_cert`/`http.tls_key`: {e}"))?;
        Some(c)
    };
    // The servers' APIs speak HTTPS when this file gives them certificates.
    let ca = if h.tls_ca.is_empty() {
        &h.tls_cert
    } else {
        &h.tls_ca
    };
    let remote_tls = if remotes.is_empty() || ca.is_empty() {
        None
    } else {
        let c = boxless_net::tls::client_config(ca.as_ref())
            .map_err(|e| anyhow::anyhow!("key `http.tls_ca`: {e}"))?;
        Some(c)
    };
    let api = boxless_api::ApiState {
        board,
        stores,
        ttl_ms: cfg.config.control.ttl_seconds * 1000,
        metrics,
        taking_calls: taking_calls.clone(),
        remotes,
        remote_tls,
        auth: Arc::new(boxless_api::auth::Auth {
            required: h.auth == boxless_core::config::HttpAuth::Token,
            tokens: cfg.tokens.clone(),
        }),
        recipients: Some(recipients),
        web: Arc::new(boxless_api::web::Web::new(
            cfg.web.base_url.clone(),
            cfg.web.proxies.clone(),
            cfg.languages.clone(),
            cfg.config.sms.utc_offset_minutes,
            tls.is_some(),
        )),
        greeting_max_seconds: cfg.config.messages.greeting_max_seconds,
    };
    let http = boxless_api::serve(listen, api, tls)
        .await
        .with_context(|| format!("starting the HTTP API on {listen}"))?;
    Ok((http, taking_calls))
}

async fn nats(
    cfg: &Checked,
    name: &str,
    board: &Arc<StatusBoard>,
) -> anyhow::Result<boxless_control::Link> {
    let k = &cfg.config.control;
    let url = &k.url;
    let ttl = Duration::from_secs(k.ttl_seconds);
    let file = |f: &str| (!f.is_empty()).then(|| std::path::PathBuf::from(f));
    let auth = boxless_control::ConnectAuth {
        user: cfg
            .secrets
            .control_password
            .clone()
            .map(|p| (k.user.clone(), p)),
        credentials_file: file(&k.credentials_file),
        tls_ca_file: file(&k.tls_ca_file),
    };
    boxless_control::connect(url, name, ttl, board.clone(), &auth)
        .await
        .with_context(|| format!("key `control.url`: cannot reach NATS at {url}"))
}

/// The recipients' preferences: `file` is the truth with the local backend, the copy of
/// the NATS bucket with `client`.
fn recipients(
    cfg: &Checked,
    file: std::path::PathBuf,
    client: Option<&boxless_control::Client>,
) -> anyhow::Result<Recipients> {
    let dir =
        Arc::new(Directory::open(&file).with_context(|| {
            format!("opening the recipients' preferences in {}", file.display())
        })?);
    Ok(match client {
        Some(c) => Recipients::nats(c.clone(), dir, cfg.config.control.kv_replicas),
        None => Recipients::Local(dir),
    })
}

fn need_nats(cfg: &Checked, what: &str) -> anyhow::Result<()> {
    if cfg.config.control.backend != ControlBackend::Nats {
        bail!(
            "key `control.backend`: `boxless {what}` runs one part of the system and exchanges status over NATS; set backend = \"nats\" (and url), or run everything with `boxless serve`"
        );
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard one for `calls` at once: each holds an
/// RTP socket and, while recording, its file, and the usual soft limit (1,024) would refuse
/// calls long before the configured capacity. Warns, naming the fix, when even the hard
/// limit is short.
/// Returns the soft limit now (`None`: unlimited).
fn raise_fd_limit<'a>(servers: impl Iterator<Item = &'a ServerSpec>) -> Option<u64> {
    let calls: u64 = servers.map(|s| u64::from(s.config.capacity)).sum();
    raise_fd_limit_for(calls)
}

fn raise_fd_limit_for(calls: u64) -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // Two a call, plus sockets, the databases, connections to the API and NATS.
    let need = calls * 2 + 512;
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current.is_some_and(|c| c < need) && lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "could not raise the open-files limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    if let Some(have) = now.filter(|&h| h < need) {
        tracing::warn!(
            have,
            need,
            "open-files limit below what the servers' capacity needs: calls beyond it fail; raise it (systemd LimitNOFILE=, ulimit -n) or lower [[servers]] capacity"
        );
    } else {
        tracing::debug!(limit = ?now, need, "open-files limit");
    }
    now
}

/// Starts everything `boxless serve` runs. Must be called inside a tokio runtime.
pub async fn serve(cfg: Checked, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    let _ = raise_fd_limit(cfg.servers.iter());
    let board = board_of(&cfg, false);
    let prompts = Arc::new(Prompts::load());
    let mut servers = Vec::new();
    let mut stores = Vec::new();
    let client = match cfg.config.control.backend {
        ControlBackend::Nats => Some(nats(&cfg, "boxless serve", &board).await?.client),
        ControlBackend::Local => None,
    };
    let recipients = recipients(
        &cfg,
        cfg.config.data_dir.join("recipients.sqlite"),
        client.as_ref(),
    )?;
    let shared = Shared {
        board: &board,
        prompts: &prompts,
        book: &Arc::new(ReceiptBook::default()),
        recipients: &recipients,
        limits: &limits(&cfg, client.as_ref()),
        client: client.as_ref(),
    };
    for spec in &cfg.servers {
        let (server, store) = start_server(&cfg, spec, &shared).await?;
        servers.push(server);
        stores.push(store);
    }
    let mut control = None;
    if let Some(client) = client {
        control = Some((client.clone(), board.clone()));
        let ttl = Duration::from_secs(cfg.config.control.ttl_seconds);
        for s in &servers {
            tokio::spawn(boxless_control::publish_status(
                client.clone(),
                board.clone(),
                s.id().to_string(),
                ttl,
                Duration::from_millis(200),
            ));
        }
    }
    let router = start_router(&cfg, &board).await?;
    let (http, taking_calls) = start_api(
        &cfg,
        cfg.config.http.listen,
        board,
        stores,
        recipients,
        metrics,
    )
    .await?;
    Ok(Running {
        router,
        http,
        servers,
        taking_calls,
        control,
    })
}

/// `boxless router`: the router and the HTTP API; status comes over NATS.
pub async fn router(cfg: Checked, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    need_nats(&cfg, "router")?;
    let board = board_of(&cfg, true);
    let link = nats(&cfg, "boxless router", &board).await?;
    let recipients = recipients(
        &cfg,
        cfg.config.data_dir.join("router").join("recipients.sqlite"),
        Some(&link.client),
    )?;
    tokio::spawn(boxless_control::follow_status(link, board.clone()));
    let router = start_router(&cfg, &board).await?;
    let (http, taking_calls) = start_api(
        &cfg,
        cfg.config.http.listen,
        board,
        Vec::new(),
        recipients,
        metrics,
    )
    .await?;
    Ok(Running {
        router,
        http,
        servers: Vec::new(),
        taking_calls,
        control: None,
    })
}

/// `boxless server --id ID`: one messaging server and its own HTTP API; it publishes its
/// status over NATS.
pub async fn server(cfg: Checked, id: &str, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    need_nats(&cfg, "server")?;
    let Some(spec) = cfg.servers.iter().find(|s| s.config.id == id) else {
        let ids: Vec<&str> = cfg.servers.iter().map(|s| s.config.id.as_str()).collect();
        bail!(
            "--id {id}: no [[servers]] entry has that id (configured: {})",
            ids.join(", ")
        );
    };
    let _ = raise_fd_limit(std::iter::once(spec));
    let board = board_of(&cfg, true);
    let prompts = Arc::new(Prompts::load());
    let client = nats(&cfg, &format!("boxless server {id}"), &board)
        .await?
        .client;
    let recipients = recipients(
        &cfg,
        cfg.config.data_dir.join(id).join("recipients.sqlite"),
        Some(&client),
    )?;
    let book = Arc::new(ReceiptBook::default());
    let c = &cfg.config;
    if c.sms.transport == SmsTransport::Smpp && c.sms.delivery_receipts {
        // Servers in their own processes may share one SMPP account: a receipt may come
        // on another server's bind, and is handed over through NATS.
        book.share(client.clone());
    }
    let shared = Shared {
        board: &board,
        prompts: &prompts,
        book: &book,
        recipients: &recipients,
        limits: &limits(&cfg, Some(&client)),
        client: Some(&client),
    };
    let (server, store) = start_server(&cfg, spec, &shared).await?;
    let ttl = Duration::from_secs(cfg.config.control.ttl_seconds);
    let board_for_exit = board.clone();
    tokio::spawn(boxless_control::publish_status(
        client.clone(),
        board.clone(),
        id.to_string(),
        ttl,
        Duration::from_millis(200),
    ));
    let (http, taking_calls) = start_api(
        &cfg,
        spec.config.http,
        board,
        vec![store],
        recipients,
        metrics,
    )
    .await?;
    Ok(Running {
        router: spec.config.listen,
        http,
        servers: vec![server],
        taking_calls,
        control: Some((client, board_for_exit)),
    })
}

impl Running {
    /// Refuses new calls, waits (up to `bound`) for calls in progress to finish.
    pub async fn drain(&self, bound: Duration) {
        self.taking_calls.store(false, Ordering::Relaxed);
        for s in &self.servers {
            s.drain();
        }
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let active: usize = self.servers.iter().map(|s| s.active_calls()).sum();
            if active == 0 {
                tracing::info!("drained: no call in progress");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(active, "drain bound reached with calls in progress");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The last word: down, so routers forget these servers now rather than at the TTL.
        for s in &self.servers {
            s.stop();
            if let Some((client, board)) = &self.control {
                boxless_control::publish_now(client, board, s.id()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::process::{Resource, getrlimit, setrlimit};

    #[test]
    fn the_open_files_limit_is_raised_for_the_capacity() {
        let mut lim = getrlimit(Resource::Nofile);
        let Some(hard) = lim.maximum.filter(|&h| h > 2600) else {
            eprintln!("hard limit {:?}: nothing to raise here", lim.maximum);
            return;
        };
        // As a distribution's default would leave it.
        lim.current = Some(1024);
        setrlimit(Resource::Nofile, lim).unwrap();
        // 1,000 calls need more than 1,024: raised to the hard limit.
        assert_eq!(super::raise_fd_limit_for(1000), Some(hard));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }
}
