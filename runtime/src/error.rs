//! The crate's error type: which thread could not start, and why. Only
//! starting can fail; stopping reports what happened in a `Stopped`.

use std::io;

/// A runtime thread could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The tokio runtime for the thread could not be built.
    #[error("building the runtime of thread {name}: {source}")]
    Build {
        /// The thread's name.
        name: String,
        /// What tokio said.
        source: io::Error,
    },
    /// The operating system refused the thread.
    #[error("starting thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// What the operating system said.
        source: io::Error,
    },
}
