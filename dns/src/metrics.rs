//! Prometheus counters of the DNS server: queries answered, by response
//! code; TCP connections refused or closed to make room; responses the rate
//! limit dropped or sent truncated. The hot path only bumps one atomic: the
//! counters are created once.

use std::sync::LazyLock;

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Response code names by the header's 4-bit RCODE (RFC 1035 §4.1.1, RFC 2136).
const RCODES: [&str; 16] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
];

/// The name of a response code as the metrics and the audit lines write it.
pub(crate) fn rcode_name(rcode: hickory_proto::op::ResponseCode) -> &'static str {
    RCODES
        .get(usize::from(rcode.low() & 0x0f))
        .copied()
        .unwrap_or("RCODE")
}

struct DnsMetrics {
    family: Family<Vec<(String, String)>, Counter>,
    by_rcode: [Counter; 16],
    tcp: Family<Vec<(String, String)>, Counter>,
    tcp_refused: Counter,
    tcp_evicted: Counter,
    limited: Family<Vec<(String, String)>, Counter>,
    dropped: Counter,
    slipped: Counter,
    truncated_for_size: Counter,
}

fn labelled(family: &Family<Vec<(String, String)>, Counter>, key: &str, value: &str) -> Counter {
    family
        .get_or_create(&vec![(key.to_owned(), value.to_owned())])
        .clone()
}

static METRICS: LazyLock<DnsMetrics> = LazyLock::new(|| {
    let family = Family::<Vec<(String, String)>, Counter>::default();
    let by_rcode = RCODES.map(|name| {
        family
            .get_or_create(&vec![("rcode".to_owned(), name.to_owned())])
            .clone()
    });
    let tcp = Family::<Vec<(String, String)>, Counter>::default();
    let limited = Family::<Vec<(String, String)>, Counter>::default();
    DnsMetrics {
        by_rcode,
        tcp_refused: labelled(&tcp, "reason", "network_full"),
        tcp_evicted: labelled(&tcp, "reason", "longest_idle"),
        dropped: labelled(&limited, "action", "dropped"),
        slipped: labelled(&limited, "action", "slipped"),
        truncated_for_size: labelled(&limited, "action", "truncated_for_size"),
        family,
        tcp,
        limited,
    }
});

/// A TCP connection closed at once: its network holds its share.
pub(crate) fn count_tcp_refused() {
    METRICS.tcp_refused.inc();
}

/// A TCP connection closed to make room for a new one.
pub(crate) fn count_tcp_evicted() {
    METRICS.tcp_evicted.inc();
}

/// A UDP response the rate limit dropped.
pub(crate) fn count_dropped() {
    METRICS.dropped.inc();
}

/// A UDP response the rate limit sent truncated instead (the client may
/// retry over TCP).
pub(crate) fn count_slipped() {
    METRICS.slipped.inc();
}

/// A UDP response sent truncated because it was too large for its query.
pub(crate) fn count_truncated_for_size() {
    METRICS.truncated_for_size.inc();
}

/// Count a response about to be sent (its header's RCODE).
pub(crate) fn count_response(response: &[u8]) {
    if let Some(flags) = response.get(3) {
        METRICS.by_rcode[usize::from(flags & 0x0f)].inc();
    }
}

/// Add the DNS metrics to `registry`.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "gatehouse_dns_responses",
        "DNS responses sent, by response code",
        METRICS.family.clone(),
    );
    registry.register(
        "gatehouse_dns_tcp_closed",
        "DNS TCP connections closed by the server's limits, by reason",
        METRICS.tcp.clone(),
    );
    registry.register(
        "gatehouse_dns_rate_limited",
        "DNS UDP responses held back by the rate limit or the size cap, by action",
        METRICS.limited.clone(),
    );
}
