//! `gatehouse run`: load the config, start the configured servers, reload on
//! SIGHUP or file change, stop gracefully on SIGTERM/SIGINT.

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use gatehouse_config::{Config, Reloader};
use gatehouse_dns::DnsListeners;
use gatehouse_jump::JumpListeners;
use prometheus_client::registry::Registry;
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    admin::{self, Health},
    cli::DEFAULT_CONFIG,
    dev, logging,
};

/// How long connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The config at `path`, else at the default path, else the dev setup
/// (`None` for the watched file then).
pub fn config_or_dev(path: Option<&Path>, announce: bool) -> anyhow::Result<(Config, bool)> {
    let default = Path::new(DEFAULT_CONFIG);
    Ok(match path {
        Some(path) => (gatehouse_config::load(path)?, true),
        None if default.exists() => (gatehouse_config::load(default)?, true),
        None => {
            let dev = dev::setup()?;
            if announce {
                print!("{}", dev.banner(default));
            }
            (dev.config, false)
        }
    })
}

pub fn run(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, watch_file) = config_or_dev(path, true)?;
    logging::init(config.log);
    // Like sshd's StrictModes: a state folder others can write to (or a
    // symlink, or another owner's) stops the start before "ready", naming
    // it. The host key exists before "ready" too: a recipe that reads it
    // right after the start (a host certificate) finds it.
    if config.jump.is_some() {
        gatehouse_jump::prepare_state(&config.state_dir)?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(config, watch_file))
}

async fn serve(config: Config, watch_file: bool) -> anyhow::Result<ExitCode> {
    // Signal handlers first: "ready" promises that SIGTERM, SIGINT and SIGHUP
    // are handled, not left to their default action (exit).
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let shutdown = CancellationToken::new();
    let reloader = Reloader::new(&config.source, config.clone());
    let live = reloader.subscribe();
    let mut servers: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut configured = Vec::new();
    if config.jump.is_some() {
        configured.push("jump");
    }
    if config.dns.is_some() {
        configured.push("dns");
    }
    let health = Health::new(&configured);
    let health = Arc::new(if watch_file {
        health.with_reloads(reloader.status())
    } else {
        health
    });

    if let Some(dns) = &config.dns {
        let listeners = DnsListeners::bind(&dns.listen).context("starting DNS")?;
        for addr in listeners.local_addrs() {
            info!(event = "listening", service = "dns", %addr, "DNS listening on {addr} (UDP and TCP)");
        }
        let (live, shutdown, health) = (live.clone(), shutdown.clone(), Arc::clone(&health));
        health.set("dns", true);
        servers.spawn(async move {
            let served = gatehouse_dns::serve(listeners, live, shutdown).await;
            health.set("dns", false);
            Ok(served?)
        });
    }

    if let Some(jump) = &config.jump {
        let listeners = JumpListeners::bind(&jump.listen).context("starting the jump host")?;
        for addr in listeners.local_addrs() {
            info!(event = "listening", service = "jump", %addr, "SSH jump host listening on {addr}");
        }
        let (live, shutdown, health) = (live.clone(), shutdown.clone(), Arc::clone(&health));
        health.set("jump", true);
        servers.spawn(async move {
            let served = gatehouse_jump::serve(listeners, live, shutdown).await;
            health.set("jump", false);
            Ok(served?)
        });
    }

    if let Some(admin) = &config.admin {
        let listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("admin: cannot listen on {}", admin.listen))?;
        let addr = listener.local_addr().unwrap_or(admin.listen);
        info!(event = "listening", service = "admin", %addr, "admin endpoint on http://{addr}/healthz and /metrics");
        let mut registry = Registry::default();
        gatehouse_jump::register_metrics(&mut registry);
        gatehouse_dns::register_metrics(&mut registry);
        registry.register_collector(Box::new(admin::ReloadMetrics(reloader.status())));
        let (health, shutdown) = (Arc::clone(&health), shutdown.clone());
        servers.spawn(async move {
            admin::serve(listener, Arc::new(registry), health, shutdown).await;
            Ok(())
        });
    }

    // The reloader owns the only sender of the live config; in the dev setup
    // there is no file to watch, but the sender must live as long as we do.
    let _reloader = if watch_file {
        let reloading = reloader
            .start(shutdown.clone())
            .context("installing the SIGHUP handler")?;
        servers.spawn(async move {
            reloading.await;
            Ok(())
        });
        None
    } else {
        Some(reloader)
    };

    info!(event = "ready", config = %config.source.display(), "gatehouse ready");
    // systemd `Type=notify`: ready once every listener is bound. Outside
    // systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(%error, "cannot notify systemd");
    }
    loop {
        tokio::select! {
            _ = term.recv() => break info!(event = "shutdown", signal = "SIGTERM", "stopping"),
            _ = int.recv() => break info!(event = "shutdown", signal = "SIGINT", "stopping"),
            // With a config file the reloader handles SIGHUP; the dev setup has none.
            _ = hup.recv(), if !watch_file => {
                info!(event = "reload", trigger = "sighup", result = "skipped", "the dev setup has no config file to reload");
            }
            Some(ended) = servers.join_next() => {
                let why = match ended {
                    Ok(Ok(())) => "a server stopped by itself".to_owned(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => format!("a server task failed: {e}"),
                };
                error!(event = "shutdown", error = %why, "stopping");
                shutdown.cancel();
                anyhow::bail!(why);
            }
        }
    }
    shutdown.cancel();
    tokio::select! {
        () = async { while servers.join_next().await.is_some() {} } => {
            info!(event = "stopped", "all servers stopped");
        }
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!(event = "stopped", grace_secs = SHUTDOWN_GRACE.as_secs(), "grace period ran out; exiting with work still in flight");
        }
        _ = term.recv() => warn!(event = "stopped", "second signal: exiting now"),
        _ = int.recv() => warn!(event = "stopped", "second signal: exiting now"),
    }
    Ok(ExitCode::SUCCESS)
}
