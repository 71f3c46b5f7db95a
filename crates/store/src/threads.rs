//! The threads a store is reached through from async code: one writer, which runs every
//! change in turn (SQLite takes one writer at a time anyway, and a change commits with
//! `synchronous = FULL` before its caller goes on), and [`READERS`] readers, each with its
//! own read-only connection, so that in WAL mode a read never waits behind a write or a
//! slow disk's fsync. [`Store::read`] and [`Store::write`] hand them closures; the queues
//! are bounded, so a burst waits in its callers rather than in memory.
//!
//! The readers wait on one queue together, and a job wakes one of them ([`Queue`]). They
//! used to take turns on a lock over a single-consumer receiver: the reader a job woke
//! then handed the lock on, which woke the next reader only for it to wait again, a
//! thread's wake for nothing at every read (`bench/RESULTS.md`).
//!
//! No async task blocks on SQLite or on the disk: it awaits the thread's answer. The
//! threads end when the store is dropped.
//!
//! A last thread checkpoints the WAL into the database file, on a connection of its own.
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000
//! pages: that commit (a deposit's, whose caller waits for its `200`) then also copies up
//! to 4 MB into the database and fsyncs it, and every change queued behind it waits too.
//! Beside the writer it takes nothing from it: in WAL mode the writer appends while the
//! checkpointer copies what is already committed. Here a checkpoint takes about 1 ms
//! (`boxless_store_checkpoint_seconds`); on a disk whose fsync is slow, that is what a
//! deposit no longer waits for.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::{Error, Result, Store};

/// Reader threads (and read-only connections) per store.
pub(crate) const READERS: usize = 2;
/// Jobs waiting for each kind of thread, at most.
const QUEUE: usize = 1024;
/// WAL pages after a commit from which the checkpointer is woken: SQLite's own default for
/// its automatic checkpoint, so the WAL stays as small as it was.
const CHECKPOINT_PAGES: i32 = 1000;

type Job = Box<dyn FnOnce() + Send>;

/// A queue of jobs to one kind of thread, bounded by its places: a caller awaits a place
/// before it queues, and a thread gives the place back as it takes the job. Idle threads
/// wait on a condition variable, not on the lock, so a job wakes exactly one of them.
/// (A multi-consumer channel, crossbeam's, measured more switches: its receivers yield
/// while they spin before they sleep.)
#[derive(Debug)]
struct Queue {
    shared: Arc<Shared>,
    places: Arc<Semaphore>,
}

#[derive(Debug, Default)]
struct Shared {
    lane: Mutex<Lane>,
    ready: Condvar,
}

#[derive(Default)]
struct Lane {
    jobs: VecDeque<(OwnedSemaphorePermit, Job)>,
    /// The queue was dropped: the threads end once it is empty.
    closed: bool,
    /// Threads taking from it.
    takers: usize,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("jobs", &self.jobs.len())
            .field("closed", &self.closed)
            .field("takers", &self.takers)
            .finish()
    }
}

/// What one thread takes a queue's jobs from.
#[derive(Debug)]
struct Taker(Arc<Shared>);

impl Shared {
    fn lane(&self) -> MutexGuard<'_, Lane> {
        // A job never runs under the lock, so no panic can poison it with a half-done change.
        self.lane.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Queue {
    fn new() -> Queue {
        Queue {
            shared: Arc::default(),
            places: Arc::new(Semaphore::new(QUEUE)),
        }
    }

    /// One more thread's end of the queue.
    fn taker(&self) -> Taker {
        self.shared.lane().takers += 1;
        Taker(self.shared.clone())
    }

    /// Queues `job` once a place is free; Err when no thread takes from the queue.
    async fn send(&self, job: Job) -> std::result::Result<(), ()> {
        // The semaphore is never closed.
        let place = self.places.clone().acquire_owned().await.map_err(|_| ())?;
        {
            let mut lane = self.shared.lane();
            if lane.takers == 0 {
                return Err(());
            }
            lane.jobs.push_back((place, job));
        }
        // Once the lock is free, so that the thread woken does not wait for it.
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.shared.lane().closed = true;
        self.shared.ready.notify_all();
    }
}

impl Taker {
    /// The next job, waiting for one; None once the queue is dropped and empty.
    fn take(&self) -> Option<Job> {
        let (place, job) = {
            let mut lane = self.0.lane();
            loop {
                if let Some(next) = lane.jobs.pop_front() {
                    break next;
                }
                if lane.closed {
                    return None;
                }
                lane = self.0.ready.wait(lane).unwrap_or_else(|p| p.into_inner());
            }
        };
        // Outside the lock: the caller this frees queues at once.
        drop(place);
        Some(job)
    }
}

impl Drop for Taker {
    fn drop(&mut self) {
        self.0.lane().takers -= 1;
    }
}

/// The two queues of one store, and the checkpointer's wake-up.
#[derive(Debug)]
pub(crate) struct Threads {
    writes: Queue,
    reads: Queue,
    checkpoint: std::sync::mpsc::SyncSender<()>,
    /// Checkpoints run so far.
    #[cfg(test)]
    checkpoints: Arc<AtomicU64>,
}

impl Threads {
    /// Starts the writer, the readers and the checkpointer (on `checkpointer`, a
    /// read-write connection of its own) of server `id`'s store.
    pub(crate) fn start(id: &str, checkpointer: Connection) -> std::io::Result<Threads> {
        let (writes, reads) = (Queue::new(), Queue::new());
        spawn(format!("store-w-{id}"), writes.taker())?;
        for i in 0..READERS {
            spawn(format!("store-r{i}-{id}"), reads.taker())?;
        }
        // One wake-up waits at most: those of the commits made meanwhile are the same one.
        let (checkpoint, wake) = std::sync::mpsc::sync_channel(1);
        let checkpoints = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&checkpoints);
        std::thread::Builder::new()
            .name(format!("store-c-{id}"))
            .spawn(move || checkpoint_loop(&checkpointer, &wake, &done))?;
        Ok(Threads {
            writes,
            reads,
            checkpoint,
            #[cfg(test)]
            checkpoints,
        })
    }

    /// Makes `conn`'s commits wake the checkpointer, in place of SQLite's automatic
    /// checkpoint inside the commit (a WAL hook replaces it).
    pub(crate) fn checkpoint_beside(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let wake = self.checkpoint.clone();
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages| {
            if pages >= CHECKPOINT_PAGES {
                // Full: the checkpointer is woken already.
                let _ = wake.try_send(());
            }
            Ok(())
        }))
    }

    /// Checkpoints run so far.
    #[cfg(test)]
    pub(crate) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }
}

/// Copies the WAL into the database file each time a commit leaves it past
/// [`CHECKPOINT_PAGES`], until the store is dropped. PASSIVE: it never waits for the writer
/// or a reader; a reader still on an old snapshot leaves the rest to the next turn.
fn checkpoint_loop(conn: &Connection, wake: &std::sync::mpsc::Receiver<()>, done: &AtomicU64) {
    while wake.recv().is_ok() {
        let t = std::time::Instant::now();
        let step = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)? != 0,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match step {
            // Another connection (an operator's sqlite3) is checkpointing: it does the work.
            Ok((true, _, _)) => tracing::debug!("WAL checkpoint busy"),
            Ok((false, log, copied)) if log >= 0 => {
                let took = t.elapsed();
                done.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("boxless_store_checkpoint_seconds").record(took.as_secs_f64());
                tracing::debug!(log, copied, ms = took.as_millis() as u64, "WAL checkpoint")
            }
            // -1: the connection is not in WAL mode (Store::open reads the mode first).
            Ok(_) => tracing::warn!("WAL checkpoint did not run: the store is not in WAL mode"),
            // Disk full, or I/O: the WAL grows meanwhile; the next commit wakes a retry.
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retried after the next commit")
            }
        }
    }
}

/// A thread running the jobs of `queue` until the store drops it. A job that panics is
/// a bug: its caller gets [`Error::Stopped`], the thread goes on.
fn spawn(name: String, queue: Taker) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(move || {
        // None once the queue is dropped: the store was.
        while let Some(job) = queue.take() {
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a store job panicked");
            }
        }
    })?;
    Ok(())
}

impl Store {
    /// Runs `f` on the store's writer thread: every change to the store from async code
    /// goes this way, one after the other. [`Error::Stopped`] if the store is gone.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T> {
        self.run(&self.threads.writes, f).await
    }

    /// Runs `f` on one of the store's reader threads: reads from async code go this way,
    /// on their own connections, beside the writes.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T> {
        self.run(&self.threads.reads, f).await
    }

    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        queue: &Queue,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let store = self.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(f(&store));
        });
        queue.send(job).await.map_err(|()| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxless_core::LinkPool;
    use std::time::Duration;

    fn store(tag: &str) -> Arc<Store> {
        let dir =
            std::env::temp_dir().join(format!("boxless-threads-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = LinkPool::parse(&["+18005550100"]).unwrap();
        Arc::new(Store::open(&dir, "ms1", pool).unwrap())
    }

    #[tokio::test]
    async fn reads_and_writes_run_off_the_async_threads_and_a_panic_stops_one_job() {
        let s = store("run");
        let here = std::thread::current().id();
        let (w, r) = (
            s.write(|_| std::thread::current().name().map(String::from))
                .await
                .unwrap(),
            s.read(|_| std::thread::current().name().map(String::from))
                .await
                .unwrap(),
        );
        assert_eq!(w.as_deref(), Some("store-w-ms1"));
        assert!(r.is_some_and(|n| n.starts_with("store-r")));
        assert_ne!(s.read(|_| std::thread::current().id()).await.unwrap(), here);
        let panicked = s.write(|_| -> u8 { panic!("a bug") }).await;
        assert!(matches!(panicked, Err(Error::Stopped)));
        assert_eq!(s.write(|_| 7).await.unwrap(), 7, "the writer goes on");
    }

    #[test]
    fn the_wal_is_checkpointed_beside_the_writer_once_past_its_threshold() {
        let s = store("checkpoint");
        let wal = s.dir.join("messages.sqlite-wal");
        {
            let db = s.db();
            db.execute_batch("CREATE TABLE filler (b BLOB)").unwrap();
            // 100 commits of 16 pages: past the threshold after about 60 of them.
            for _ in 0..100 {
                db.execute("INSERT INTO filler VALUES (zeroblob(65536))", [])
                    .unwrap();
            }
        }
        let t = std::time::Instant::now();
        while s.threads.checkpoints() == 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(s.threads.checkpoints() > 0, "the checkpointer was woken");
        // Everything committed is in the database file now: a fresh connection's
        // checkpoint finds every frame of the WAL copied already.
        let c = Connection::open(s.dir.join("messages.sqlite")).unwrap();
        let _: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let (log, copied) = loop {
            // Busy (1, -1, -1) while the checkpointer is at it.
            let (busy, log, copied): (i64, i64, i64) = c
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            if busy == 0 || t.elapsed() > Duration::from_secs(5) {
                break (log, copied);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(log >= CHECKPOINT_PAGES as i64, "{log} frames");
        assert_eq!(copied, log);
        assert!(wal.exists());
        // A wake-up left from the last commits runs, then nothing more: the next commit
        // starts the WAL again from its beginning, below the threshold.
        std::thread::sleep(Duration::from_millis(200));
        let before = s.threads.checkpoints();
        s.db()
            .execute("INSERT INTO filler VALUES (zeroblob(100))", [])
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.threads.checkpoints(), before);
    }

    #[tokio::test]
    async fn reads_run_side_by_side_on_the_readers() {
        let s = store("readers");
        // Each read waits (5 s at most) until every reader holds one: they only all
        // get there if each read has a reader of its own at once.
        let inside = Arc::new(AtomicU64::new(0));
        let reads: Vec<_> = (0..READERS)
            .map(|_| {
                let (s, inside) = (s.clone(), inside.clone());
                tokio::spawn(async move {
                    s.read(move |_| {
                        inside.fetch_add(1, Ordering::SeqCst);
                        let t = std::time::Instant::now();
                        while inside.load(Ordering::SeqCst) < READERS as u64
                            && t.elapsed() < Duration::from_secs(5)
                        {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        inside.load(Ordering::SeqCst)
                    })
                    .await
                })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), READERS as u64);
        }
    }

    #[tokio::test]
    async fn a_read_does_not_wait_behind_a_slow_write() {
        let s = store("slow");
        let (started_tx, started) = oneshot::channel();
        let w = s.clone();
        let slow = tokio::spawn(async move {
            w.write(move |st| {
                let _ = started_tx.send(());
                // Holds the writer (and its connection) like a slow fsync would.
                let _db = st.db();
                std::thread::sleep(Duration::from_millis(500));
            })
            .await
        });
        started.await.unwrap();
        let t = std::time::Instant::now();
        let n = s
            .read(|st| st.list(None, 10).map(|l| l.len()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        slow.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_queue_holds_its_places_worth_of_jobs_then_callers_wait_for_a_taken_one() {
        let q = Queue::new();
        let taker = q.taker();
        for _ in 0..QUEUE {
            q.send(Box::new(|| ())).await.unwrap();
        }
        let next = q.send(Box::new(|| ()));
        tokio::pin!(next);
        let waited = tokio::time::timeout(Duration::from_millis(50), &mut next).await;
        assert!(waited.is_err(), "the queue is full: the caller waits");
        // A thread takes a job and gives its place back: the caller's job goes in.
        taker.take().expect("a job")();
        next.await.unwrap();
        assert_eq!(q.shared.lane().jobs.len(), QUEUE);
        // With no thread left to take them, a caller is told so rather than waiting.
        drop(taker);
        q.places.add_permits(1);
        assert!(q.send(Box::new(|| ())).await.is_err());
    }

    #[test]
    fn a_dropped_queue_ends_its_threads_once_they_took_what_it_held() {
        let q = Queue::new();
        let taker = q.taker();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut ran = 0;
            while let Some(job) = taker.take() {
                job();
                ran += 1;
            }
            ran
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..3 {
            let tx = tx.clone();
            rt.block_on(q.send(Box::new(move || tx.send(i).unwrap())))
                .unwrap();
        }
        drop(q);
        assert_eq!(thread.join().unwrap(), 3);
        assert_eq!(rx.iter().take(3).collect::<Vec<_>>(), [0, 1, 2]);
    }
}
