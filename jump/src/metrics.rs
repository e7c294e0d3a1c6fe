//! Prometheus metrics of the jump host, fed by the audit events (every
//! connection, auth attempt, ban and tunnel passes through `audit`).

use std::sync::{
    LazyLock,
    atomic::{AtomicBool, Ordering},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = Vec<(String, String)>;

pub(crate) struct JumpMetrics {
    pub connections: Counter,
    pub auth: Family<Labels, Counter>,
    pub bans: Counter,
    pub tunnels_open: Gauge,
    pub tunnels: Family<Labels, Counter>,
    pub bytes: Family<Labels, Counter>,
    /// Is a fleet's Redis configured (`state.redis`)?
    pub store_configured: AtomicBool,
    /// 1 while the fleet's Redis answers, else 0.
    pub store_up: Gauge,
    /// The last Redis command's round trip, microseconds.
    pub store_latency_us: Gauge,
    /// Values read from the fleet's Redis and refused: no valid MAC, an
    /// older generation, a deletion no signed reset explains (issue 24).
    pub store_refused: Counter,
}

pub(crate) static METRICS: LazyLock<JumpMetrics> = LazyLock::new(|| JumpMetrics {
    connections: Counter::default(),
    auth: Family::default(),
    bans: Counter::default(),
    tunnels_open: Gauge::default(),
    tunnels: Family::default(),
    bytes: Family::default(),
    store_configured: AtomicBool::new(false),
    store_up: Gauge::default(),
    store_latency_us: Gauge::default(),
    store_refused: Counter::default(),
});

/// The fleet's Redis as `/healthz` reports it: `None` when state is local,
/// else whether it answers and its last round trip in microseconds.
pub fn state_store_health() -> Option<(bool, i64)> {
    let m = &*METRICS;
    m.store_configured
        .load(Ordering::Relaxed)
        .then(|| (m.store_up.get() == 1, m.store_latency_us.get()))
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Add the jump host's metrics to `registry`.
pub fn register_metrics(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "gatehouse_jump_connections",
        "SSH connections accepted past the gate",
        m.connections.clone(),
    );
    registry.register(
        "gatehouse_jump_auth",
        "Authentication attempts by method and result",
        m.auth.clone(),
    );
    registry.register("gatehouse_jump_bans", "Sources banned", m.bans.clone());
    registry.register(
        "gatehouse_jump_tunnels_open",
        "Tunnels open now",
        m.tunnels_open.clone(),
    );
    registry.register(
        "gatehouse_jump_tunnels",
        "Tunnels by outcome (opened, refused)",
        m.tunnels.clone(),
    );
    registry.register(
        "gatehouse_jump_tunnel_bytes",
        "Bytes through tunnels, by direction",
        m.bytes.clone(),
    );
    registry.register(
        "gatehouse_state_store_up",
        "1 while the fleet's Redis answers (state.redis), else 0",
        m.store_up.clone(),
    );
    registry.register(
        "gatehouse_state_store_latency_microseconds",
        "The last command's round trip to the fleet's Redis",
        m.store_latency_us.clone(),
    );
    registry.register(
        "gatehouse_state_store_refused",
        "Values read from the fleet's Redis and refused (no valid MAC, an older generation, \
         an unexplained deletion)",
        m.store_refused.clone(),
    );
}
