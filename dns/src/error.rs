//! The crate's error type: what failed, on which address, over which transport.

use std::{fmt, io, net::SocketAddr};

/// The two DNS transports every listen address serves (RFC 7766: TCP is not optional).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams; answers limited by the client's buffer size, TC set when cut short.
    Udp,
    /// Streams with a two-byte length prefix; answers up to 65535 bytes.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// `dns.listen` was empty.
    #[error("no DNS listen addresses given")]
    NoListenAddresses,

    /// A socket could not be created, configured or bound.
    #[error("cannot listen for DNS on {addr} ({transport}): {source}")]
    Bind {
        /// The address as configured (port 0 replaced by the port being tried).
        addr: SocketAddr,
        /// Which of the two sockets failed.
        transport: Transport,
        /// What the operating system said.
        source: io::Error,
    },

    /// With port 0, no port was found that is free for both UDP and TCP.
    #[error("no port free for both UDP and TCP on {addr} after {attempts} attempts")]
    NoFreePort {
        /// The address as configured.
        addr: SocketAddr,
        /// How many ports were tried.
        attempts: u32,
    },

    /// A bound socket could not be handed to the async runtime.
    #[error("cannot serve DNS on {addr} ({transport}): {source}")]
    Register {
        /// The bound address.
        addr: SocketAddr,
        /// Which socket failed.
        transport: Transport,
        /// What the runtime said.
        source: io::Error,
    },

    /// The threads the UDP loops run on could not be started.
    #[error("cannot start the DNS UDP threads: {source}")]
    Threads {
        /// Which thread, and what the operating system said.
        source: gatehouse_runtime::RuntimeError,
    },

    /// The dynamic names' state file is not what gatehouse wrote.
    #[error("the dynamic names file: {0}")]
    NamesFile(String),

    /// The dynamic names' state file or its folder could not be used.
    #[error("{path}: {source}")]
    State {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

impl DnsError {
    /// True when binding failed only because the port is taken (worth another try with port 0).
    pub(crate) fn is_addr_in_use(&self) -> bool {
        matches!(self, DnsError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    }
}
