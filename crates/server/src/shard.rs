//! The threads calls run on. Each call's task lives its whole life on one of a fixed set of
//! single-threaded runtimes, one a core, picked by the call's RTP port; SIP, HTTP and the
//! notifiers stay on the process's work-stealing runtime.
//!
//! Why not the work-stealing runtime for calls too: a call wakes on the drain grid
//! ([`crate::intake::drain_due`]) together with a tenth of all calls, and the worker whose
//! timer fired them woke an idle sibling to steal half of each burst. A call's machine,
//! window and socket then moved between cores from one drain to the next, and every tick
//! cost a cross-core wake. Measured at 1,000 recordings: about a tenth of Boxless's CPU
//! (`bench/RESULTS.md`). A call's drain is some tens of microseconds of work, too little
//! for moving it to another core to pay. The port picks the shard, so calls spread evenly,
//! and a shard count that divides the grid's phases keeps each tick's burst on one thread.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tokio::runtime::{Builder, Handle};

use crate::intake::call_index;

/// The process's call threads.
#[derive(Debug)]
pub(crate) struct Shards {
    handles: Vec<Handle>,
}

impl Shards {
    /// The process's shards, started at the first call of this (one thread a core, as the
    /// scheduler allows this process: `available_parallelism`). Every messaging server in
    /// the process shares them.
    pub(crate) fn process() -> std::io::Result<Arc<Shards>> {
        static SHARDS: Mutex<Option<Arc<Shards>>> = Mutex::new(None);
        let mut slot = SHARDS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let n = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        let s = Arc::new(Shards::start(n).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("starting {n} call threads: {e} (raise the process's thread limit)"),
            )
        })?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// `n` threads, each running its own runtime until the process ends.
    fn start(n: NonZeroUsize) -> std::io::Result<Shards> {
        let mut handles = Vec::with_capacity(n.get());
        for i in 0..n.get() {
            let rt = Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            std::thread::Builder::new()
                .name(format!("boxless-call-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Shards { handles })
    }

    /// Runs the task of the call on RTP `port` on that port's shard: consecutive calls
    /// ([`call_index`]) land on consecutive shards, as on consecutive drain phases.
    pub(crate) fn spawn(&self, port: u16, task: impl Future<Output = ()> + Send + 'static) {
        let i = call_index(port) as usize % self.handles.len();
        self.handles[i].spawn(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_s_call_runs_on_its_own_shard_thread_and_neighbours_on_the_next() {
        let shards = Shards::start(NonZeroUsize::new(2).expect("two")).expect("threads");
        let (tx, rx) = std::sync::mpsc::channel();
        for port in [40000u16, 40002, 40004] {
            let tx = tx.clone();
            shards.spawn(port, async move {
                let name = std::thread::current().name().map(str::to_owned);
                tx.send((port, name)).expect("receiver waits");
            });
        }
        let mut seen: Vec<_> = (0..3).map(|_| rx.recv().expect("each task runs")).collect();
        seen.sort();
        let names: Vec<_> = seen.iter().map(|(_, n)| n.as_deref()).collect();
        assert_eq!(
            names,
            [
                Some("boxless-call-0"),
                Some("boxless-call-1"),
                Some("boxless-call-0")
            ]
        );
    }
}
