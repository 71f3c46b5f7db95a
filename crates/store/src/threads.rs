//! The threads a store is reached through from async code: one writer, which runs every
//! change in turn (SQLite takes one writer at a time anyway, and a change commits with
//! `synchronous = FULL` before its caller goes on), and [`READERS`] readers, each with its
//! own read-only connection, so that in WAL mode a read never waits behind a write or a
//! slow disk's fsync. [`Store::read`] and [`Store::write`] hand them closures; the queues
//! are bounded, so a burst waits in its callers rather than in memory.
//!
//! No async task blocks on SQLite or on the disk: it awaits the thread's answer. The
//! threads end when the store is dropped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result, Store};

/// Reader threads (and read-only connections) per store.
pub(crate) const READERS: usize = 2;
/// Jobs waiting for each kind of thread, at most.
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The two queues of one store.
#[derive(Debug)]
pub(crate) struct Threads {
    writes: mpsc::Sender<Job>,
    reads: mpsc::Sender<Job>,
}

impl Threads {
    /// Starts the writer and the readers of server `id`'s store.
    pub(crate) fn start(id: &str) -> std::io::Result<Threads> {
        let (writes, w) = mpsc::channel::<Job>(QUEUE);
        let (reads, r) = mpsc::channel::<Job>(QUEUE);
        spawn(format!("store-w-{id}"), Arc::new(Mutex::new(w)))?;
        let r = Arc::new(Mutex::new(r));
        for i in 0..READERS {
            spawn(format!("store-r{i}-{id}"), r.clone())?;
        }
        Ok(Threads { writes, reads })
    }
}

/// A thread running the jobs of `queue` until every sender is gone. A job that panics is
/// a bug: its caller gets [`Error::Stopped`], the thread goes on.
fn spawn(name: String, queue: Arc<Mutex<mpsc::Receiver<Job>>>) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(move || {
        loop {
            // One reader waits on the queue at a time; the others wait for the lock.
            let job = queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .blocking_recv();
            let Some(job) = job else { return };
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
        queue: &mpsc::Sender<Job>,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let store = self.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(f(&store));
        });
        queue.send(job).await.map_err(|_| Error::Stopped)?;
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
}
