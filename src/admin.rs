//! The optional admin endpoint (`admin.listen`): `GET /healthz` and
//! `GET /metrics` (Prometheus text). Loopback by intent; still bounded like
//! anything with a socket: a few connections at once, one small request
//! each, a short timeout.

use std::{
    sync::{
        Arc,
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
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

const MAX_CONNECTIONS: usize = 16;
const MAX_REQUEST: usize = 8 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

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
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Take the permit before accepting: it limits live connections.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
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
        let (registry, health) = (Arc::clone(&registry), Arc::clone(&health));
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(TIMEOUT, respond(stream, &registry, &health)).await;
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    registry: &Registry,
    health: &Health,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0_u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || request.len() + n > MAX_REQUEST {
            return Ok(());
        }
        request.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
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
