//! gatehouse's runtime threads: N named OS threads, each running one
//! single-threaded tokio runtime.
//!
//! Work placed on such a thread (a task and everything it spawns) stays
//! there, so its wake-ups never cross threads; the jump host puts each
//! connection on the least loaded thread, the DNS server pins one UDP loop
//! to each. [`Threads`] starts them, hands out their runtimes, and at the
//! end stops and joins them within a grace the caller states; dropping it
//! ends them too, so a server that returns early leaves no threads behind.
//!
//! This crate owns threads and runtimes (and the accept loops' one shared
//! back-off) only: no sockets, no config, and no knowledge of the servers
//! that use it.
//!
//! Layout:
//! - `threads`: [`Threads`], its [`Load`] guard and what [`Threads::stop`]
//!   reports ([`Stopped`]);
//! - `error`: [`RuntimeError`], a thread or runtime that could not start;
//! - `accept`: [`accept_backoff`], the pause after an accept error.
//!
//! ```no_run
//! # async fn run() -> Result<(), gatehouse_runtime::RuntimeError> {
//! let threads = gatehouse_runtime::Threads::start("worker", 2)?;
//! let (runtime, load) = threads.pick();
//! runtime.spawn(async move {
//!     let _load = load; // counted on that thread while the task runs
//! });
//! let stopped = threads.stop(std::time::Duration::from_secs(1)).await;
//! assert!(stopped.is_clean());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod accept;
mod error;
mod threads;

pub use accept::{ACCEPT_ERROR_PAUSE, accept_backoff};
pub use error::RuntimeError;
pub use threads::{Load, Stopped, Threads};
