//! The optional admin endpoint (`admin.listen`): `GET /healthz` and
//! `GET /metrics` (Prometheus text). Loopback by intent; still bounded like
//! anything with a socket: a few connections at once, one small request
//! each, a short timeout. Must never stop accepting: a load balancer's
//! health check is answered while idle sockets hold every slot (issue 23,
//! item 8a), so a full house makes room (`Slots`) instead of waiting.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use gatehouse_config::ReloadStatus;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

const MAX_CONNECTIONS: usize = 16;
const MAX_REQUEST: usize = 8 * 1024;
/// The whole exchange, answer included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// To receive the request (line and headers: curl and load balancers send
/// them in one segment). A socket that sends nothing is closed after this,
/// or sooner when a newer connection needs its slot.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The connections in flight, oldest first, and which still wait for their
/// request. The decision only: `serve` does the I/O.
#[derive(Debug, Default)]
struct Slots {
    next: u64,
    live: VecDeque<Slot>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    /// Still waiting for its request: it may be evicted.
    idle: bool,
    evict: CancellationToken,
}

impl Slots {
    /// A slot for a new connection: its id and the token that evicts it.
    /// With `max` taken, the oldest connection still waiting for its request
    /// is evicted to make room (an idle socket must not keep a health check
    /// out); `None` when every one is busy answering.
    fn admit(&mut self, max: usize) -> Option<(u64, CancellationToken)> {
        if self.live.len() >= max {
            let oldest_idle = self.live.iter().position(|s| s.idle)?;
            if let Some(evicted) = self.live.remove(oldest_idle) {
                evicted.evict.cancel();
            }
        }
        let id = self.next;
        self.next += 1;
        let evict = CancellationToken::new();
        self.live.push_back(Slot {
            id,
            idle: true,
            evict: evict.clone(),
        });
        Some((id, evict))
    }

    /// Connection `id` has its request: it is answered, not evicted.
    fn answering(&mut self, id: u64) {
        if let Some(slot) = self.live.iter_mut().find(|s| s.id == id) {
            slot.idle = false;
        }
    }

    fn done(&mut self, id: u64) {
        self.live.retain(|s| s.id != id);
    }
}

/// A connection's slot, given back when its task ends however it ends.
struct Held {
    slots: Arc<Mutex<Slots>>,
    id: u64,
}

impl Held {
    fn with<T>(&self, f: impl FnOnce(&mut Slots) -> T) -> T {
        // No await under the lock; a poisoned one still holds valid data.
        f(&mut self.slots.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let id = self.id;
        self.with(|slots| slots.done(id));
    }
}

/// Sent, without waiting, to a connection there is no slot for.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Which configured halves are serving, and whether the config in force is
/// the file's.
#[derive(Debug, Default)]
pub struct Health {
    /// (name, configured, serving)
    services: Vec<(&'static str, AtomicBool)>,
    reloads: Option<Arc<ReloadStatus>>,
}

impl Health {
    /// A health board for these configured services, none serving yet.
    pub fn new(services: &[&'static str]) -> Health {
        Health {
            services: services
                .iter()
                .map(|s| (*s, AtomicBool::new(false)))
                .collect(),
            reloads: None,
        }
    }

    /// Also report whether the config file applies (with a file to reload).
    pub fn with_reloads(mut self, reloads: Arc<ReloadStatus>) -> Health {
        self.reloads = Some(reloads);
        self
    }

    /// Mark `service` as serving (true) or stopped (false).
    pub fn set(&self, service: &str, serving: bool) {
        for (name, flag) in &self.services {
            if *name == service {
                flag.store(serving, Ordering::Release);
            }
        }
    }

    fn report(&self) -> (bool, String) {
        let mut ok = true;
        let mut text = String::new();
        for (name, flag) in &self.services {
            let serving = flag.load(Ordering::Acquire);
            ok &= serving;
            text += &format!("{name}: {}\n", if serving { "serving" } else { "down" });
        }
        // A stale config is reported, not failed: the servers run on the
        // last good one, and taking every host of a fleet out of a balancer
        // because one push was invalid would be the outage.
        // The fleet's Redis: reported, not failed. TOTP logins fail closed
        // meanwhile (or go local), bans and limits go on locally.
        match gatehouse_jump::state_store_health() {
            Some((true, us)) => text += &format!("state: redis up, last round trip {us} µs\n"),
            Some((false, _)) => text += "state: redis unreachable\n",
            None => {}
        }
        if let Some(reloads) = &self.reloads {
            match reloads.stale() {
                Some(why) => text += &format!("config: stale, the file does not apply: {why}\n"),
                None => text += "config: current\n",
            }
        }
        (ok, text)
    }
}

/// `gatehouse_config_reload_failed_total` and `gatehouse_config_stale`,
/// read from the reloader at scrape time.
#[derive(Debug)]
pub struct ReloadMetrics(pub Arc<ReloadStatus>);

impl Collector for ReloadMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let failed = ConstCounter::new(self.0.failed_total());
        let metric = encoder.encode_descriptor(
            "gatehouse_config_reload_failed",
            "Reloads refused because the file was invalid",
            None,
            failed.metric_type(),
        )?;
        failed.encode(metric)?;
        let stale = ConstGauge::new(i64::from(self.0.stale().is_some()));
        let metric = encoder.encode_descriptor(
            "gatehouse_config_stale",
            "1 while the config file does not apply and an older one is in force",
            None,
            stale.metric_type(),
        )?;
        stale.encode(metric)
    }
}

pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    loop {
        // Never waits for a slot: the newest connection gets one (see
        // `Slots::admit`), so accepting goes on whatever the others do.
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let admitted = slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(MAX_CONNECTIONS);
        let Some((id, evict)) = admitted else {
            // Every slot is busy answering: say so at once and close. A new
            // socket's send buffer is empty, so this write does not block.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let held = Held {
            slots: Arc::clone(&slots),
            id,
        };
        let (registry, health) = (Arc::clone(&registry), Arc::clone(&health));
        tokio::spawn(async move {
            tokio::select! {
                () = evict.cancelled() => debug!("admin connection evicted for a newer one"),
                _ = tokio::time::timeout(TIMEOUT, respond(stream, &registry, &health, &held)) => {}
            }
        });
    }
}

/// The request's head, or `None` if the peer closed, sent too much or took
/// longer than [`REQUEST_TIMEOUT`].
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0_u8; 1024];
    let read = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 || request.len() + n > MAX_REQUEST {
                return None;
            }
            request.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Some(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.ok()??;
    Some(request)
}

async fn respond(
    mut stream: TcpStream,
    registry: &Registry,
    health: &Health,
    held: &Held,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await else {
        return Ok(());
    };
    held.with(|slots| slots.answering(held.id));
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split(' ');
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/healthz")) => {
            let (ok, text) = health.report();
            (
                if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                },
                "text/plain; charset=utf-8",
                text,
            )
        }
        (Some("GET"), Some("/metrics")) => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        (Some("GET"), _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /healthz or /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn a_full_house_evicts_the_oldest_idle_connection() {
        let mut slots = Slots::default();
        let taken: Vec<_> = (0..3).map(|_| slots.admit(3).expect("room")).collect();
        slots.answering(taken[0].0);
        let (newest, _) = slots.admit(3).expect("room made");
        // Not the one being answered: the oldest still waiting.
        assert!(!taken[0].1.is_cancelled());
        assert!(taken[1].1.is_cancelled());
        assert!(!taken[2].1.is_cancelled());
        assert_eq!(slots.live.len(), 3);
        assert!(slots.live.iter().any(|s| s.id == newest));
    }

    #[test]
    fn with_every_slot_answering_a_newcomer_is_refused_until_one_is_done() {
        let mut slots = Slots::default();
        let taken: Vec<_> = (0..2).map(|_| slots.admit(2).expect("room")).collect();
        for (id, _) in &taken {
            slots.answering(*id);
        }
        assert!(slots.admit(2).is_none());
        slots.done(taken[0].0);
        assert!(slots.admit(2).is_some());
        assert!(taken.iter().all(|(_, evict)| !evict.is_cancelled()));
    }

    #[test]
    fn a_thousand_idle_sockets_keep_at_most_max_slots() {
        let mut slots = Slots::default();
        let all: Vec<_> = (0..1000).map(|_| slots.admit(16).expect("room")).collect();
        assert_eq!(slots.live.len(), 16);
        let evicted = all.iter().filter(|(_, e)| e.is_cancelled()).count();
        assert_eq!(evicted, 1000 - 16);
        // An evicted connection's task gives back nothing it still holds.
        slots.done(all[0].0);
        assert_eq!(slots.live.len(), 16);
    }
}
