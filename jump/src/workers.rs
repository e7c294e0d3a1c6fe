//! Connection threads: one single-threaded runtime per core. This file owns
//! only the choice (how many threads, their name, how long stopping may
//! take); the threads themselves are `gatehouse_runtime::Threads`. It must
//! not accept or touch connections: `server` does.
//!
//! A tunnel is two tasks that hand every packet to each other: russh's
//! session (decrypt, encrypt) and the pump to the internal host. On a
//! work-stealing runtime they land on different threads and every packet
//! becomes a cross-thread wake-up; profiles of `ssh -W` put that at a fifth
//! of the tunnel's CPU (benches/RESULTS.md). Here a connection — russh's
//! session, its tunnels, their sockets and timers — lives on one thread from
//! accept to close, and connections are spread over the threads (fewest
//! live connections first), so all cores still serve.

use std::time::Duration;

use gatehouse_runtime::{Load, Threads};
use tokio::runtime::Handle;
use tracing::warn;

use crate::error::JumpError;

/// How long the threads get to end once their connections have: they have
/// nothing left to do, so this only bounds a thread stuck outside its
/// runtime.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The connection threads of one server; dropping it ends them.
pub(crate) struct Workers(Threads);

impl Workers {
    /// One thread per available core, named `jump-{index}`.
    pub(crate) fn start() -> Result<Self, JumpError> {
        let count = std::thread::available_parallelism().map_or(1, usize::from);
        Threads::start("jump", count)
            .map(Workers)
            .map_err(JumpError::Runtime)
    }

    /// The thread with the fewest live connections, and the count that
    /// holds this connection's place there.
    pub(crate) fn pick(&self) -> (&Handle, Load) {
        self.0.pick()
    }

    /// Ends the threads once their connections have ended (the caller
    /// waits for those first); tasks still there are dropped. Returns
    /// within [`STOP_GRACE`].
    pub(crate) async fn stop(&self) {
        let stopped = self.0.stop(STOP_GRACE).await;
        if !stopped.is_clean() {
            warn!(
                late = stopped.late,
                panicked = stopped.panicked,
                grace = ?STOP_GRACE,
                "jump connection threads did not all end cleanly"
            );
        }
    }
}
