//! Wiring: builds the router, the messaging servers, their notifiers and the HTTP API from
//! a checked configuration, and drains them on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use boxless_core::config::SmsTransport;
use boxless_core::{Checked, Rng, ServerSlot, StatusBoard};
use boxless_media::Prompts;
use boxless_notify::{Backoff, NotifierHandle, Sender, Smpp, SmppSettings};
use boxless_router::RouterCore;
use boxless_router::proxy::ProxySettings;
use boxless_server::MessagingServer;
use boxless_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

/// A running `serve`: addresses actually bound and handles for tests and shutdown.
pub struct Running {
    /// The router's SIP address.
    pub router: SocketAddr,
    /// The HTTP API address.
    pub http: SocketAddr,
    /// The messaging servers.
    pub servers: Vec<Arc<MessagingServer>>,
    /// Cleared when draining.
    pub taking_calls: Arc<AtomicBool>,
}

/// Starts everything `boxless serve` runs. Must be called inside a tokio runtime.
pub async fn serve(cfg: Checked, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    let c = &cfg.config;
    let board = Arc::new(StatusBoard {
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
            })
            .collect(),
    });
    let prompts = Arc::new(Prompts::load());
    let mut servers = Vec::new();
    let mut stores = Vec::new();
    for spec in &cfg.servers {
        let id = &spec.config.id;
        let dir = c.data_dir.join(id);
        let store =
            Arc::new(Store::open(&dir, id, spec.pool.clone()).with_context(|| {
                format!("opening the store of server `{id}` in {}", dir.display())
            })?);
        let notifier = Arc::new(NotifierHandle::default());
        let sender = match c.sms.transport {
            SmsTransport::Log => Sender::Log,
            SmsTransport::Smpp => Sender::Smpp(Smpp::new(SmppSettings {
                address: c.sms.address.clone(),
                system_id: c.sms.system_id.clone(),
                password: c.sms.password.clone(),
                enquire_link: Duration::from_secs(c.sms.enquire_link_seconds.max(1)),
            })),
        };
        let backoff = Backoff::new(
            c.sms.retry_initial_ms,
            c.sms.retry_max_ms,
            Rng::from_entropy(),
        );
        tokio::spawn(boxless_notify::worker::run(
            store.clone(),
            sender,
            backoff,
            notifier.clone(),
        ));
        notifier.healthy.store(true, Ordering::Relaxed);
        let server = MessagingServer::start(
            &cfg,
            spec,
            board.clone(),
            store.clone(),
            notifier,
            prompts.clone(),
        )
        .await
        .with_context(|| format!("starting server `{id}` on {}", spec.config.listen))?;
        servers.push(server);
        stores.push(store);
    }
    let core = Arc::new(RouterCore {
        board: board.clone(),
        numbering: cfg.numbering.clone(),
        mode: c.router.mode,
        ttl_ms: c.control.ttl_seconds * 1000,
        retry_after: c.router.retry_after_seconds,
    });
    let router = boxless_router::start(
        core,
        boxless_router::RouterSettings {
            listen: c.router.listen,
            max_message: c.sip.max_message_bytes,
            rng_seed: c.router.rng_seed,
            proxy: ProxySettings {
                answer_timeout: Duration::from_millis(c.router.proxy_answer_ms),
                t1: Duration::from_millis(c.sip.t1_ms),
                ..ProxySettings::default()
            },
        },
    )
    .await
    .with_context(|| format!("starting the router on {}", c.router.listen))?;
    let taking_calls = Arc::new(AtomicBool::new(true));
    let http = boxless_api::serve(
        c.http.listen,
        boxless_api::ApiState {
            board,
            stores,
            ttl_ms: c.control.ttl_seconds * 1000,
            metrics,
            taking_calls: taking_calls.clone(),
        },
    )
    .await
    .with_context(|| format!("starting the HTTP API on {}", c.http.listen))?;
    Ok(Running {
        router,
        http,
        servers,
        taking_calls,
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
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(active, "drain bound reached with calls in progress");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
