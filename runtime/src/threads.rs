//! [`Threads`]: start N named threads with one current-thread runtime each,
//! hand out the least loaded, stop and join them within a stated grace.
//!
//! It must never block a runtime thread (joins run on `spawn_blocking`, and
//! only for threads already past their runtime), and never wait past the
//! grace it was given: a thread still busy then is left to end on its own.

use std::{
    convert::Infallible,
    fmt, iter,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::{
    runtime::{Builder, Handle},
    sync::oneshot,
    time::{Instant, timeout_at},
};
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;

/// N OS threads named `{name}-{index}`, each running a single-threaded tokio
/// runtime with I/O and time enabled.
///
/// A task spawned on one of them, and every task it spawns with
/// `tokio::spawn`, runs on that thread and no other. Dropping `Threads`
/// tells every thread to end (tasks still there are dropped), so an early
/// return leaves no threads behind; [`Threads::stop`] also waits for them.
pub struct Threads {
    /// Always there: `start` starts at least one thread, so `pick` always
    /// has an answer.
    first: Thread,
    others: Vec<Thread>,
    /// Tells every thread to leave its runtime.
    stop: CancellationToken,
    /// Taken by the first `stop`.
    running: Mutex<Vec<Running>>,
}

/// What callers reach a thread through.
struct Thread {
    runtime: Handle,
    load: Arc<AtomicUsize>,
}

/// What `stop` waits for.
struct Running {
    thread: JoinHandle<()>,
    /// Never sent on: it resolves when the thread drops its end, after its
    /// runtime and every task on it are gone (also when it panics).
    ended: oneshot::Receiver<Infallible>,
}

/// Counts one piece of work on its thread for as long as it is held (see
/// [`Threads::pick`]).
#[derive(Debug)]
#[must_use = "the work is counted only while its Load is held"]
pub struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How [`Threads::stop`] went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "a late or panicked thread is worth a log line"]
pub struct Stopped {
    /// Threads still running when the grace ran out (blocked outside
    /// their runtime, say); they were left to end on their own.
    pub late: usize,
    /// Threads that ended by panicking.
    pub panicked: usize,
}

impl Stopped {
    /// Every thread ended within the grace, none by panicking.
    pub fn is_clean(&self) -> bool {
        self.late == 0 && self.panicked == 0
    }
}

impl Threads {
    /// Starts `count` threads (at least one) named `{name}-{index}`.
    ///
    /// If one cannot be started, the ones already started end and the
    /// error names the one that failed. Linux shows at most 15 bytes of a
    /// thread's name, so keep `name` short.
    pub fn start(name: &str, count: usize) -> Result<Threads, RuntimeError> {
        let stop = CancellationToken::new();
        // Threads already started end if a later one cannot be.
        let started = stop.clone().drop_guard();
        let (first, first_running) = start_one(format!("{name}-0"), &stop)?;
        let mut others = Vec::with_capacity(count.saturating_sub(1));
        let mut running = Vec::with_capacity(count.max(1));
        running.push(first_running);
        for index in 1..count {
            let (thread, thread_running) = start_one(format!("{name}-{index}"), &stop)?;
            others.push(thread);
            running.push(thread_running);
        }
        started.disarm();
        Ok(Threads {
            first,
            others,
            stop,
            running: Mutex::new(running),
        })
    }

    /// Each thread's runtime, in index order: to pin work to one thread
    /// (`Handle::spawn`, `TaskTracker::spawn_on`), or to register a socket
    /// with that thread's reactor (`Handle::enter`).
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.threads().map(|thread| &thread.runtime)
    }

    /// The thread with the fewest [`Load`]s held, and a new one counting
    /// the caller's work there until it is dropped.
    pub fn pick(&self) -> (&Handle, Load) {
        let mut least = &self.first;
        for thread in &self.others {
            if thread.load.load(Ordering::Relaxed) < least.load.load(Ordering::Relaxed) {
                least = thread;
            }
        }
        least.load.fetch_add(1, Ordering::Relaxed);
        (&least.runtime, Load(Arc::clone(&least.load)))
    }

    /// Tells every thread to end, and waits at most `grace` for them.
    ///
    /// A thread ends by dropping its runtime, and with it every task still
    /// there, so work the caller wants finished must be waited for first
    /// (a `TaskTracker`). What can outlast `grace` is a thread blocked
    /// outside its runtime: a task that never yields, or a `spawn_blocking`
    /// job the runtime waits for; such a thread is counted in
    /// [`Stopped::late`] and left to end on its own. Only the first call
    /// waits; later ones return at once. Call it from outside these threads.
    pub async fn stop(&self, grace: Duration) -> Stopped {
        self.stop.cancel();
        let deadline = Instant::now() + grace;
        let running =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        let mut stopped = Stopped::default();
        let mut ended = Vec::with_capacity(running.len());
        for Running {
            thread,
            ended: signal,
        } in running
        {
            match timeout_at(deadline, signal).await {
                Ok(_) => ended.push(thread),
                // Dropping the JoinHandle detaches the thread.
                Err(_) => stopped.late += 1,
            }
        }
        // These threads are past their runtimes and end at once, but a join
        // still blocks, so it runs off the caller's runtime threads.
        let joined = tokio::task::spawn_blocking(move || {
            ended
                .into_iter()
                .map(JoinHandle::join)
                .filter(Result::is_err)
                .count()
        })
        .await;
        // Not joined only if the caller's runtime is itself shutting down;
        // the threads did end, none known to have panicked.
        stopped.panicked = joined.unwrap_or(0);
        stopped
    }

    fn threads(&self) -> impl Iterator<Item = &Thread> {
        iter::once(&self.first).chain(&self.others)
    }

    /// The loads held on each thread, in index order.
    fn loads(&self) -> Vec<usize> {
        self.threads()
            .map(|thread| thread.load.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Threads {
    /// A server that returns early (an error after start) leaves no
    /// threads behind.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for Threads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threads")
            .field("loads", &self.loads())
            .field("stopping", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

fn start_one(name: String, stop: &CancellationToken) -> Result<(Thread, Running), RuntimeError> {
    // Built here rather than on the thread, so a failure is reported to
    // the caller and the handle is known before any work arrives.
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RuntimeError::Build {
            name: name.clone(),
            source,
        })?;
    let handle = runtime.handle().clone();
    let stop = stop.clone();
    let (ended_tx, ended) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            // Declared first, so dropped last (also when unwinding): the
            // runtime and its tasks are gone when `stop` hears of it.
            let _ended = ended_tx;
            let runtime = runtime;
            runtime.block_on(stop.cancelled());
            drop(runtime);
        })
        .map_err(|source| RuntimeError::Spawn { name, source })?;
    Ok((
        Thread {
            runtime: handle,
            load: Arc::new(AtomicUsize::new(0)),
        },
        Running { thread, ended },
    ))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        sync::mpsc,
        thread::ThreadId,
        time::{Duration, Instant},
    };

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn work_goes_to_the_least_loaded_thread_and_stays_there() {
        let threads = Threads::start("test", 2).expect("threads");
        let mut held = Vec::new();
        let mut seen: HashSet<ThreadId> = HashSet::new();
        let mut names = HashSet::new();
        for _ in 0..4 {
            let (runtime, load) = threads.pick();
            // A task and what it spawns run on the same thread.
            let (outer, inner, name) = runtime
                .spawn(async {
                    let outer = std::thread::current();
                    let inner = tokio::spawn(async { std::thread::current().id() }).await;
                    let name = outer.name().map(str::to_owned);
                    (outer.id(), inner.expect("inner task"), name)
                })
                .await
                .expect("task");
            assert_eq!(outer, inner);
            seen.insert(outer);
            names.insert(name.expect("a named thread"));
            held.push(load);
        }
        assert_eq!(seen.len(), 2, "both threads were used");
        let expected: HashSet<String> = ["test-0".to_owned(), "test-1".to_owned()].into();
        assert_eq!(names, expected);
        assert_eq!(threads.loads(), [2, 2]);
        held.clear();
        assert_eq!(threads.loads(), [0, 0]);
        assert!(threads.stop(WAIT).await.is_clean());
    }

    #[tokio::test]
    async fn asking_for_no_threads_starts_one() {
        let threads = Threads::start("one", 0).expect("threads");
        assert_eq!(threads.handles().count(), 1);
        assert!(threads.stop(WAIT).await.is_clean());
    }

    #[test]
    fn dropping_the_threads_ends_them() {
        let threads = Threads::start("test", 2).expect("threads");
        let running = std::mem::take(&mut *threads.running.lock().expect("lock"));
        drop(threads);
        let (ended, joined) = mpsc::channel();
        std::thread::spawn(move || {
            let all = running.into_iter().all(|r| r.thread.join().is_ok());
            let _ = ended.send(all);
        });
        let all = joined.recv_timeout(WAIT).expect("the threads ended");
        assert!(all, "no thread panicked");
    }

    #[tokio::test]
    async fn stop_drops_tasks_that_never_end_without_waiting_out_the_grace() {
        let threads = Threads::start("test", 2).expect("threads");
        let mut dropped = Vec::new();
        for runtime in threads.handles() {
            // Held by the task: it closes when the task is dropped.
            let (guard, closed) = oneshot::channel::<()>();
            runtime.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            dropped.push(closed);
        }
        let stopped = threads.stop(WAIT).await;
        // None late: every thread said it ended before the grace ran out,
        // so its never-ending task was dropped, not waited for.
        assert_eq!(stopped, Stopped::default());
        for closed in dropped {
            assert!(closed.await.is_err(), "the task was dropped");
        }
        // A second stop has nothing left to wait for.
        assert!(threads.stop(WAIT).await.is_clean());
    }

    #[tokio::test]
    async fn stop_returns_after_the_grace_when_a_thread_is_blocked() {
        const GRACE: Duration = Duration::from_millis(200);
        let threads = Threads::start("test", 2).expect("threads");
        let (blocking_tx, blocking) = oneshot::channel();
        // The thread stays blocked until the test lets it go, after stop
        // returned: a stop that waited for it would never return.
        let (release, released) = mpsc::channel::<()>();
        if let Some(runtime) = threads.handles().next() {
            runtime.spawn(async move {
                let _ = blocking_tx.send(());
                // Never yields: the thread cannot leave its runtime.
                let _ = released.recv();
            });
        }
        blocking.await.expect("the blocking task started");
        let started = Instant::now();
        let stopped = tokio::time::timeout(WAIT, threads.stop(GRACE))
            .await
            .expect("stop waited for the blocked thread");
        let took = started.elapsed();
        release.send(()).expect("the thread still waits");
        assert!(took >= GRACE, "stop returned before its grace: {took:?}");
        assert_eq!(
            stopped,
            Stopped {
                late: 1,
                panicked: 0
            }
        );
        assert!(!stopped.is_clean());
    }
}
