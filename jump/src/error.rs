//! Errors of the jump host, each with the path or address it is about.

use std::{io, net::SocketAddr, path::PathBuf};

/// Why the jump host could not start or keep its state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JumpError {
    /// The fleet's Redis does not answer (and what was asked needs it).
    #[error("the fleet's Redis is unreachable")]
    StoreUnavailable,
    /// A value read from the fleet's Redis is not believed (audited
    /// `store_refused`).
    #[error("a value in the fleet's Redis failed its check (see the store_refused audit line)")]
    StoreRefused,
    /// The fleet's Redis settings cannot be used (`state.redis`).
    #[error("state.redis: {0}")]
    Fleet(String),
    /// The state directory could not be created or read.
    #[error("state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state directory, or a folder in it, is not one gatehouse can
    /// trust: anyone who can write there plants host keys or enrollments
    /// (like sshd's StrictModes).
    #[error("state folder {} {why}", path.display())]
    UnsafeStateDir {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        why: Untrusted,
    },
    /// A file in the state directory is not one gatehouse wrote (another
    /// owner, or writable by others): not read.
    #[error("state file {} {why}; not trusted", path.display())]
    UntrustedStateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: Untrusted,
    },
    /// A state file could not be read or written.
    #[error("{}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A state file could be read but does not parse (or could not be encoded).
    #[error("{}: {source}", path.display())]
    StateFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A state file holds (or would hold) a value gatehouse refuses: a bad
    /// secret, an enrollment that exists already or is provisioned.
    #[error("{}: {reason}", path.display())]
    StateValue {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A provisioned TOTP secret file (`totp_secret_file`) cannot be used.
    #[error("{}: {source}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: gatehouse_config::SecretError,
    },
    /// State I/O runs on a blocking thread; that thread failed.
    #[error("state I/O task failed: {0}")]
    Blocking(#[source] tokio::task::JoinError),
    /// The host key could not be generated, read or written.
    #[error("host key {}: {reason}", path.display())]
    HostKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A listen address could not be bound.
    #[error("jump: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A connection thread or its runtime could not be started.
    #[error("jump: cannot start a connection thread: {0}")]
    Runtime(#[source] gatehouse_runtime::RuntimeError),
    /// The user is not in the configuration.
    #[error("no user {0:?} in the jump configuration")]
    UnknownUser(String),
    /// The configuration has no `jump` section.
    #[error("the configuration has no `jump` section")]
    NoJumpConfig,
}

/// Why a folder or file under `state_dir` is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Untrusted {
    /// A symlink: it could point anywhere (its target is not checked).
    #[error(
        "is a symbolic link; gatehouse follows none in its state (point state_dir at the real folder)"
    )]
    Symlink,
    /// Not a folder.
    #[error("is not a folder ({0})")]
    NotDir(&'static str),
    /// Owned by another user than the one gatehouse runs as.
    #[error(
        "is owned by uid {owner}, not by uid {euid} that gatehouse runs as \
         (chown it, or run gatehouse as its owner)"
    )]
    Owner {
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        euid: u32,
    },
    /// Writable by the group or by anyone.
    #[error("has mode {mode:04o}: it must not be group- or world-writable (chmod go-w it)")]
    Writable {
        /// Its permission bits.
        mode: u32,
    },
}
