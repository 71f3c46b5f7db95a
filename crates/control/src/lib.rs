//! The control plane: each messaging server publishes its status on NATS whenever it
//! changes (at most every `min_gap`) and at least three times per TTL; routers keep the
//! latest status per server and ask every server for it when they start. NATS is the
//! distributed engine (a cluster for several hosts); Boxless never gossips on its own.
//!
//! Subjects: `boxless.status.<server id>` (status), `boxless.status.request` (ask).
#![warn(missing_docs)]

pub mod counters;
pub mod greetings;
pub mod recipients;
pub mod replica;
pub mod takeover;

use std::sync::Arc;
use std::time::Duration;

use boxless_core::{ServerSlot, ServerState, StatusBoard, StatusView, now_ms};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The NATS client type.
pub use async_nats::Client;
pub use recipients::{Recipients, RecipientsError};

/// Subject a server publishes its status on.
pub fn status_subject(id: &str) -> String {
    format!("boxless.status.{id}")
}

/// Where routers ask every server for its status.
pub const REQUEST_SUBJECT: &str = "boxless.status.request";

/// A status as it travels (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusMessage {
    /// Server id.
    pub id: String,
    /// up | draining | down
    pub state: String,
    /// Calls in progress.
    pub active_calls: u32,
    /// Most concurrent calls.
    pub capacity: u32,
    /// Free bytes on its data disk.
    pub free_disk_bytes: u64,
    /// True while its notifier can send.
    pub notifier_ok: bool,
    /// Messages not yet in JetStream; absent when it does not replicate (and from
    /// servers of a version before replication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreplicated: Option<u64>,
    /// The server ids whose link numbers and web links it answers: itself, and any it
    /// took over. Absent: itself alone (the usual case, and servers of an earlier
    /// version); an empty list: none (it is catching up after a takeover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serves: Option<Vec<String>>,
}

impl StatusMessage {
    /// The status of `slot` now.
    pub fn of(slot: &ServerSlot) -> StatusMessage {
        let v = slot.view();
        StatusMessage {
            id: slot.id.clone(),
            state: v.state.as_str().to_string(),
            active_calls: v.active,
            capacity: v.capacity,
            free_disk_bytes: v.free_disk,
            notifier_ok: v.notifier_ok,
            unreplicated: v.unreplicated,
            serves: None,
        }
    }

    /// The status of the board's slot `index` now, with whom it serves.
    pub fn of_slot(board: &StatusBoard, index: usize) -> StatusMessage {
        let slot = &board.slots[index];
        let mut m = StatusMessage::of(slot);
        let (me, others) = slot.serves();
        if !me || others != 0 {
            m.serves = Some(
                board
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| (i == index && me) || (i < 64 && others & (1 << i) != 0))
                    .map(|(_, s)| s.id.clone())
                    .collect(),
            );
        }
        m
    }

    /// Writes it into the router's slot for that server. Freshness is the router's own
    /// receive time, so clocks of different hosts never need to agree.
    pub fn apply(&self, board: &StatusBoard, received_ms: u64) -> bool {
        let Some(slot) = board.by_id(&self.id) else {
            return false;
        };
        let state = match self.state.as_str() {
            "up" => ServerState::Up,
            "draining" => ServerState::Draining,
            _ => ServerState::Down,
        };
        slot.publish(StatusView {
            state,
            active: self.active_calls,
            capacity: self.capacity,
            free_disk: self.free_disk_bytes,
            notifier_ok: self.notifier_ok,
            last_update_ms: received_ms,
            probe_down: false,
            unreplicated: self.unreplicated,
        });
        match &self.serves {
            None => slot.set_serves(true, 0),
            Some(ids) => {
                let (mut me, mut others) = (false, 0u64);
                for id in ids {
                    match board.slots.iter().position(|s| &s.id == id) {
                        _ if *id == self.id => me = true,
                        Some(i) if i < 64 => others |= 1 << i,
                        // An id this board does not know (or past the 64th): ignored.
                        _ => {}
                    }
                }
                slot.set_serves(me, others);
            }
        }
        true
    }

    /// True when a router would decide differently after this change.
    pub fn differs(&self, other: &StatusMessage) -> bool {
        self.state != other.state
            || self.notifier_ok != other.notifier_ok
            || (self.active_calls >= self.capacity) != (other.active_calls >= other.capacity)
            || self.active_calls != other.active_calls
            || self.serves != other.serves
    }
}

/// `control.url` may list several servers of a cluster, comma-separated; the client
/// connects to any of them and learns the rest of the cluster from it.
fn servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// How a process proves itself to NATS (`control.user`/`password_file`, or
/// `credentials_file`) and which CA the NATS servers' TLS certificates chain to.
#[derive(Debug, Clone, Default)]
pub struct ConnectAuth {
    /// User and password.
    pub user: Option<(String, boxless_core::config::Secret)>,
    /// A credentials file (JWT and NKey seed).
    pub credentials_file: Option<std::path::PathBuf>,
    /// CA file: set, the connection requires TLS and verifies the server against it.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

/// A NATS connection and what its state changes drive.
pub struct Link {
    /// The client.
    pub client: async_nats::Client,
    /// Woken each time the connection is (re)established.
    pub connected: Arc<tokio::sync::Notify>,
}

/// Connects to NATS, retrying in the background until it answers (and again after every
/// outage, at most a second apart). The link's state is written into `board.control`:
/// while NATS is unreachable the board is judged on the last known status for the
/// configured grace. Pings every `ttl / 3` find a silent partition within about a TTL.
pub async fn connect(
    url: &str,
    name: &str,
    ttl: Duration,
    board: Arc<StatusBoard>,
    auth: &ConnectAuth,
) -> Result<Link, async_nats::ConnectError> {
    let connected = Arc::new(tokio::sync::Notify::new());
    let wake = connected.clone();
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = &auth.user {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    if let Some(creds) = &auth.credentials_file {
        options = options.credentials_file(creds).await.map_err(|e| {
            async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, e)
        })?;
    }
    if let Some(ca) = &auth.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .ping_interval((ttl / 3).max(Duration::from_millis(250)))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(50u64 << attempts.clamp(1, 5) as u32).min(Duration::from_secs(1))
        })
        .event_callback(move |event| {
            let board = board.clone();
            let wake = wake.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        board.control_up(now_ms());
                        tracing::info!("control plane (NATS) connected");
                        wake.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        board.control.down(now_ms());
                        tracing::warn!(
                            "control plane (NATS) unreachable: routing on the last known status and SIP probes for the grace period"
                        );
                    }
                    async_nats::Event::ClientError(e) => {
                        // Wrong credentials or a refused subject: say so loudly, once per event.
                        tracing::error!(error = %e, "control plane (NATS) refused this client");
                    }
                    async_nats::Event::ServerError(e) => {
                        tracing::error!(error = %e, "control plane (NATS) error");
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        })
        .connect(servers(url))
        .await?;
    Ok(Link { client, connected })
}

/// A server's side: publish on change (at most every `min_gap`) and every `ttl / 3`;
/// answer routers' requests by publishing at once, on its own subject like every status
/// (a router takes a status from no other subject, and NATS permissions can allow each
/// server that one subject alone). Runs until the process ends.
pub async fn publish_status(
    client: async_nats::Client,
    board: Arc<StatusBoard>,
    id: String,
    ttl: Duration,
    min_gap: Duration,
) {
    let subject = status_subject(&id);
    let Some(index) = board.slots.iter().position(|s| s.id == id) else {
        tracing::error!(%id, "server missing from the status board; status not published");
        return;
    };
    let mut requests = match client.subscribe(REQUEST_SUBJECT).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to status requests");
            None
        }
    };
    let every = (ttl / 3).max(Duration::from_millis(100));
    let mut last: Option<StatusMessage> = None;
    let mut last_sent = tokio::time::Instant::now() - every;
    let mut tick = tokio::time::interval(min_gap.min(every));
    loop {
        let mut asked = false;
        tokio::select! {
            _ = tick.tick() => {}
            req = async {
                match requests.as_mut() {
                    Some(r) => r.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match req {
                    Some(_) => asked = true,
                    None => requests = None,
                }
            }
        }
        let now = StatusMessage::of_slot(&board, index);
        let due = last_sent.elapsed() >= every;
        let changed =
            last.as_ref().is_none_or(|l| l.differs(&now)) && last_sent.elapsed() >= min_gap;
        let Ok(payload) = serde_json::to_vec(&now) else {
            continue;
        };
        // While NATS is away nothing is queued: the first status after it returns is
        // current, not a backlog of old ones.
        let up = client.connection_state() == async_nats::connection::State::Connected;
        if up && (due || changed || asked) {
            match client.publish(subject.clone(), payload.into()).await {
                Ok(()) => {
                    last = Some(now);
                    last_sent = tokio::time::Instant::now();
                }
                Err(e) => tracing::debug!(error = %e, "status not published (NATS unreachable?)"),
            }
        }
    }
}

/// Publishes server `id`'s status once, now, and waits (up to a second) until NATS has
/// it: the last word of a server that stops.
pub async fn publish_now(client: &async_nats::Client, board: &StatusBoard, id: &str) {
    let Some(index) = board.slots.iter().position(|s| s.id == id) else {
        return;
    };
    let Ok(payload) = serde_json::to_vec(&StatusMessage::of_slot(board, index)) else {
        return;
    };
    if client.connection_state() != async_nats::connection::State::Connected {
        return;
    }
    let sent = async {
        client
            .publish(status_subject(id), payload.into())
            .await
            .ok()?;
        client.flush().await.ok()
    };
    if tokio::time::timeout(Duration::from_secs(1), sent)
        .await
        .is_err()
    {
        tracing::debug!(%id, "final status not confirmed by NATS");
    }
}

/// A router's side: take every server's status as it comes; ask all of them each time
/// the connection is established (at start and after an outage) instead of waiting.
pub async fn follow_status(link: Link, board: Arc<StatusBoard>) {
    let client = link.client;
    let mut sub = match client.subscribe("boxless.status.*").await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to server status");
            return;
        }
    };
    let rejected = metrics::counter!("boxless_control_rejected_total");
    loop {
        let m = tokio::select! {
            _ = link.connected.notified() => {
                // Servers answer on their own subjects, which this subscription reads.
                if let Err(e) = client.publish(REQUEST_SUBJECT, "".into()).await {
                    tracing::warn!(error = %e, "status request not sent");
                }
                continue;
            }
            m = sub.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        if m.subject.as_str() == REQUEST_SUBJECT {
            continue;
        }
        if let Err(why) = accept(&board, m.subject.as_str(), &m.payload, now_ms()) {
            rejected.increment(1);
            tracing::debug!(subject = %m.subject, %why, "status ignored");
        }
    }
}

/// Why a status message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Not JSON of a status.
    #[error("malformed status: {0}")]
    Malformed(String),
    /// The id in the payload is not the one its subject names.
    #[error("status of `{id}` published on another server's subject")]
    WrongSubject {
        /// The id the payload claims.
        id: String,
    },
    /// The id is not in this router's configuration.
    #[error("`{0}` is not a configured server")]
    Unknown(String),
}

/// Takes a status received on `subject` into the board: only a configured server's, and
/// only from that server's own subject (`boxless.status.<id>`), so a client allowed to
/// publish as one server cannot speak for another.
pub fn accept(
    board: &StatusBoard,
    subject: &str,
    payload: &[u8],
    received_ms: u64,
) -> Result<(), Rejected> {
    let s: StatusMessage =
        serde_json::from_slice(payload).map_err(|e| Rejected::Malformed(e.to_string()))?;
    if subject != status_subject(&s.id) {
        return Err(Rejected::WrongSubject { id: s.id });
    }
    if !s.apply(board, received_ms) {
        return Err(Rejected::Unknown(s.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::LinkPool;

    #[test]
    fn url_lists_every_cluster_server() {
        assert_eq!(
            servers("nats://a:4222, nats://b:4222,,nats://c:4222"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(servers("nats://127.0.0.1:4222"), ["nats://127.0.0.1:4222"]);
    }

    #[test]
    fn unreplicated_travels_only_from_a_server_that_replicates() {
        let slot = ServerSlot::new(
            "ms1",
            ([127, 0, 0, 1], 5070).into(),
            LinkPool::default(),
            10,
        );
        slot.publish(StatusView::up(10, 1));
        let wire = serde_json::to_string(&StatusMessage::of(&slot)).unwrap();
        assert!(!wire.contains("unreplicated"), "{wire}");
        slot.set_unreplicated(Some(7));
        let m = StatusMessage::of(&slot);
        assert_eq!(m.unreplicated, Some(7));
        let board = StatusBoard::new(vec![ServerSlot::new(
            "ms1",
            ([127, 0, 0, 1], 5070).into(),
            LinkPool::default(),
            10,
        )]);
        let back: StatusMessage =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert!(back.apply(&board, 2));
        assert_eq!(board.slots[0].view().unreplicated, Some(7));
        // A status from a server of a version before replication parses, as "does not".
        let old: StatusMessage = serde_json::from_str(&wire).unwrap();
        assert!(old.apply(&board, 3));
        assert_eq!(board.slots[0].view().unreplicated, None);
    }

    #[test]
    fn status_round_trips_and_freshness_is_the_receivers() {
        let slot = ServerSlot::new(
            "ms1",
            ([127, 0, 0, 1], 5070).into(),
            LinkPool::default(),
            10,
        );
        slot.publish(StatusView::up(10, 1));
        slot.call_started();
        let m = StatusMessage::of(&slot);
        let wire = serde_json::to_vec(&m).unwrap();
        let back: StatusMessage = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back, m);
        let board = StatusBoard::new(vec![ServerSlot::new(
            "ms1",
            ([127, 0, 0, 1], 5070).into(),
            LinkPool::default(),
            10,
        )]);
        assert!(!board.slots[0].view().fresh(5000, 3000));
        assert!(back.apply(&board, 4000));
        let v = board.slots[0].view();
        assert_eq!((v.active, v.last_update_ms), (1, 4000));
        assert!(v.available(5000, 3000));
        let stranger = StatusMessage {
            id: "ms9".into(),
            ..back.clone()
        };
        assert!(!stranger.apply(&board, 4000));
        // Only from its own subject, and only a configured id.
        let payload = serde_json::to_vec(&back).unwrap();
        assert_eq!(accept(&board, "boxless.status.ms1", &payload, 4100), Ok(()));
        assert_eq!(
            accept(&board, "boxless.status.ms2", &payload, 4200),
            Err(Rejected::WrongSubject { id: "ms1".into() })
        );
        assert_eq!(board.slots[0].view().last_update_ms, 4100, "nothing taken");
        let ms9 = serde_json::to_vec(&stranger).unwrap();
        assert_eq!(
            accept(&board, "boxless.status.ms9", &ms9, 4300),
            Err(Rejected::Unknown("ms9".into()))
        );
        assert!(matches!(
            accept(&board, "boxless.status.ms1", b"{", 4300),
            Err(Rejected::Malformed(_))
        ));
        let mut draining = back.clone();
        draining.state = "draining".into();
        assert!(draining.differs(&back));
        assert!(!back.differs(&back.clone()));
    }

    #[test]
    fn serves_travels_by_id_and_its_absence_means_itself() {
        let slot =
            |id: &str| ServerSlot::new(id, ([127, 0, 0, 1], 5070).into(), LinkPool::default(), 10);
        let here = StatusBoard::new(vec![slot("ms1"), slot("ms2"), slot("ms3")]);
        let m = StatusMessage::of_slot(&here, 1);
        assert_eq!(m.serves, None, "itself alone is not written");
        here.slots[1].set_serves(true, 0b001);
        let m = StatusMessage::of_slot(&here, 1);
        assert_eq!(m.serves, Some(vec!["ms1".to_string(), "ms2".to_string()]));
        assert!(m.differs(&StatusMessage::of(&here.slots[1])));
        // A router whose board lists the servers in another order maps them by id.
        let there = StatusBoard::new(vec![slot("ms3"), slot("ms2"), slot("ms1")]);
        assert!(m.apply(&there, 5));
        assert_eq!(there.slots[1].serves(), (true, 0b100));
        here.slots[0].set_serves(false, 0);
        let back = StatusMessage::of_slot(&here, 0);
        assert_eq!(back.serves, Some(vec![]));
        assert!(back.apply(&there, 6));
        assert_eq!(there.slots[2].serves(), (false, 0));
        let mut stranger = m.clone();
        stranger.serves = Some(vec!["ms2".into(), "ms9".into()]);
        assert!(stranger.apply(&there, 7));
        assert_eq!(
            there.slots[1].serves(),
            (true, 0),
            "an unknown id is ignored"
        );
        let old: StatusMessage = serde_json::from_str(
            &serde_json::to_string(&StatusMessage::of(&here.slots[2])).unwrap(),
        )
        .unwrap();
        assert!(old.apply(&there, 8));
        assert_eq!(there.slots[0].serves(), (true, 0));
    }
}
