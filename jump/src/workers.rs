//! Connection threads: one single-threaded runtime per core.
//!
//! A tunnel is two tasks that hand every packet to each other: russh's
//! session (decrypt, encrypt) and the pump to the internal host. On a
//! work-stealing runtime they land on different threads and every packet
//! becomes a cross-thread wake-up; profiles of `ssh -W` put that at a fifth
//! of the tunnel's CPU (benches/RESULTS.md). Here a connection — russh's
//! session, its tunnels, their sockets and timers — lives on one thread from
//! accept to close, and connections are spread over the threads (fewest
//! live connections first), so all cores still serve.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::JumpError;

/// The connection threads of one server.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct Worker {
    runtime: Handle,
    live: Arc<AtomicUsize>,
}

/// Counts a connection on its thread for as long as it is held.
pub(crate) struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// One thread per available core.
    pub(crate) fn start() -> Result<Self, JumpError> {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        Self::start_n(count)
    }

    pub(crate) fn start_n(count: usize) -> Result<Self, JumpError> {
        let stop = CancellationToken::new();
        // Threads already started end if a later one cannot be.
        let started = stop.clone().drop_guard();
        let mut workers = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(JumpError::Runtime)?;
            workers.push(Worker {
                runtime: runtime.handle().clone(),
                live: Arc::new(AtomicUsize::new(0)),
            });
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("jump-{index}"))
                .spawn(move || runtime.block_on(stop.cancelled()))
                .map_err(JumpError::Runtime)?;
            threads.push(thread);
        }
        started.disarm();
        Ok(Self {
            workers,
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// The thread with the fewest live connections, and the count that
    /// holds this connection's place there.
    pub(crate) fn pick(&self) -> Option<(&Handle, Load)> {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))?;
        worker.live.fetch_add(1, Ordering::Relaxed);
        Some((&worker.runtime, Load(Arc::clone(&worker.live))))
    }

    /// Ends the threads once their connections have ended (the caller
    /// waits for those first); tasks still there are dropped.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().all(|thread| thread.join().is_ok())
        })
        .await;
        if !matches!(joined, Ok(true)) {
            warn!("a jump connection thread panicked");
        }
    }
}

impl Drop for Workers {
    /// A server that returns early (an error after start) leaves no
    /// threads behind.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, thread::ThreadId};

    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_thread_and_stay_there() {
        let workers = Workers::start_n(2).expect("threads");
        let mut held = Vec::new();
        let mut seen: HashSet<ThreadId> = HashSet::new();
        for _ in 0..4 {
            let (runtime, load) = workers.pick().expect("a worker");
            // A task and what it spawns run on the same thread.
            let (outer, inner) = runtime
                .spawn(async {
                    let outer = std::thread::current().id();
                    let inner = tokio::spawn(async { std::thread::current().id() }).await;
                    (outer, inner.expect("inner task"))
                })
                .await
                .expect("task");
            assert_eq!(outer, inner);
            seen.insert(outer);
            held.push(load);
        }
        assert_eq!(seen.len(), 2, "both threads were used");
        let live: Vec<usize> = workers
            .workers
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .collect();
        assert_eq!(live, [2, 2]);
        held.clear();
        assert!(
            workers
                .workers
                .iter()
                .all(|w| w.live.load(Ordering::Relaxed) == 0)
        );
        workers.stop().await;
    }

    #[test]
    fn dropping_the_workers_ends_their_threads() {
        let workers = Workers::start_n(2).expect("threads");
        let threads = std::mem::take(&mut *workers.threads.lock().expect("lock"));
        drop(workers);
        let (ended, joined) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let all = threads.into_iter().all(|t| t.join().is_ok());
            let _ = ended.send(all);
        });
        let all = joined
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the threads ended");
        assert!(all, "no thread panicked");
    }
}
