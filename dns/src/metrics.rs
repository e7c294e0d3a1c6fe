//! Prometheus counters of the DNS server: queries answered, by response code.
//! The hot path only bumps one atomic: the per-rcode counters are created
//! once and indexed by the header's rcode.

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

struct DnsMetrics {
    family: Family<Vec<(String, String)>, Counter>,
    by_rcode: [Counter; 16],
}

static METRICS: LazyLock<DnsMetrics> = LazyLock::new(|| {
    let family = Family::<Vec<(String, String)>, Counter>::default();
    let by_rcode = RCODES.map(|name| {
        family
            .get_or_create(&vec![("rcode".to_owned(), name.to_owned())])
            .clone()
    });
    DnsMetrics { family, by_rcode }
});

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
}
