//! gatehouse's authoritative DNS server for private dev TLDs.
//!
//! A record such as `saxophone: 192.168.222.16` in zone `sean` answers
//! `saxophone.sean` and every name below it, like dnsmasq's
//! `address=/.saxophone.sean/…`; the longest matching record wins. Answers
//! for the configured zones are authoritative (`aa`), with proper negative
//! answers (NXDOMAIN or NODATA with the zone SOA), SOA and NS at each apex,
//! and minimal ANY (RFC 8482). Names outside every zone are refused, or
//! forwarded when upstreams are configured: never an open resolver by
//! default. UDP and TCP on every address, EDNS(0), truncation over UDP.
//!
//! Shutdown is bounded: [`serve`] returns at most 6 s after its shutdown
//! token is cancelled — 5 s for queries in flight (forwarded ones keep being
//! driven on their UDP threads), then what is left is dropped and the UDP
//! threads are joined within one more second.
//!
//! Layout:
//! - `zones`: [`ZoneTable`], the configured names keyed for suffix lookups;
//! - `answer`: [`answer`], the decision for one question (no I/O);
//! - `message`: [`respond`] and [`finish_forwarded`], request bytes to
//!   response bytes (no I/O);
//! - `fast`: [`fast_respond`], the hand-written path `respond` takes for
//!   plain A/AAAA queries (no hickory types, no allocation);
//! - `listeners`: [`DnsListeners`], binding UDP + TCP on each address;
//! - `server`: [`serve`], starting the loops, live reloads and the bounded
//!   shutdown;
//! - `context`: what the loops share (zone table, forward cap, task tracker,
//!   shutdown tokens), so they never import `server`;
//! - `udp`: one loop per socket, each on its own `gatehouse-runtime` thread,
//!   `recvmmsg`/`sendmmsg` batches;
//! - `tcp`, `forward`: the rest of the I/O glue;
//! - `tcp_slots`: who may hold a TCP connection (per network, the longest
//!   idle closed at the cap); `prefix`: a client's network (/24, /56);
//! - `rate_limit`: response rate limiting and the size cap for UDP (no
//!   reflection, no amplification); `cookie`: DNS Cookies (RFC 7873/9018),
//!   which exempt a client that proves its address from both;
//! - `update`: RFC 2136 updates signed with TSIG, the names they add
//!   (kept in `state_dir`) and their audit line;
//! - `metrics`: Prometheus counters (responses by rcode);
//! - `resolver`: the laptop side, `/etc/resolver` and friends (text only).
//!
//! ```no_run
//! # async fn run(
//! #     config: tokio::sync::watch::Receiver<std::sync::Arc<gatehouse_config::Config>>,
//! # ) -> Result<(), gatehouse_dns::DnsError> {
//! let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let listeners = gatehouse_dns::DnsListeners::bind(&[loopback])?;
//! println!("dns on {:?}", listeners.local_addrs());
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! gatehouse_dns::serve(listeners, config, shutdown).await
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod answer;
mod clock;
mod context;
mod cookie;
mod error;
mod fast;
mod forward;
mod listeners;
mod message;
mod metrics;
mod prefix;
mod rate_limit;
mod resolver;
mod server;
mod tcp;
mod tcp_slots;
mod udp;
mod update;
mod zones;

/// The hickory-proto crate, for the name and record types in this API.
pub use hickory_proto as proto;

pub use answer::{Outcome, Reply, answer};
pub use error::{DnsError, Transport};
pub use fast::fast_respond;
pub use listeners::DnsListeners;
pub use message::{EDNS_UDP_PAYLOAD, Handled, finish_forwarded, full_respond, respond};
pub use metrics::register_metrics;
pub use resolver::{Os, resolver_setup};
pub use server::serve;
pub use update::{
    ALL_PER_SECOND, DnsAudit, DynamicName, MAX_ADDRS_PER_NAME, MAX_IN_FLIGHT, MAX_UPDATE_LEN,
    Names, NamesFile, PER_NETWORK_PER_SECOND, Served, UpdateResult, judge_update,
};
pub use zones::{AddressRecord, Lookup, ZoneApex, ZoneTable};

#[cfg(test)]
mod tests;
