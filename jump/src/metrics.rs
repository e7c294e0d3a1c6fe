//! Prometheus metrics of the jump host, fed by the audit events (every
//! connection, auth attempt, ban and tunnel passes through `audit`).

use std::sync::LazyLock;

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
}

pub(crate) static METRICS: LazyLock<JumpMetrics> = LazyLock::new(|| JumpMetrics {
    connections: Counter::default(),
    auth: Family::default(),
    bans: Counter::default(),
    tunnels_open: Gauge::default(),
    tunnels: Family::default(),
    bytes: Family::default(),
});

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
}
