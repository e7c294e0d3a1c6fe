//! Live reload: SIGHUP and changes of the config file produce a new config,
//! validated before it is published; an invalid file leaves the running
//! config in force.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{error::ConfigError, load::load, model::Config};

/// The settings a reload does not apply (listeners are bound and the
/// state store opened once, at start) that differ between `running` and
/// `new`, by their YAML names; empty when a reload applies all of `new`.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let jump = |c: &Config| {
        c.jump
            .as_ref()
            .map(|j| j.listen.clone())
            .unwrap_or_default()
    };
    let dns = |c: &Config| c.dns.as_ref().map(|d| d.listen.clone()).unwrap_or_default();
    let admin = |c: &Config| c.admin.as_ref().map(|a| a.listen);
    let mut changed = Vec::new();
    for (name, differs) in [
        ("state_dir", running.state_dir != new.state_dir),
        ("log", running.log != new.log),
        ("state", running.state != new.state),
        ("jump.listen", jump(running) != jump(new)),
        ("dns.listen", dns(running) != dns(new)),
        ("admin.listen", admin(running) != admin(new)),
    ] {
        if differs {
            changed.push(name);
        }
    }
    changed
}

/// Editors and configuration management write a file in several steps
/// (truncate + write, or write temp + rename); wait this long after the last
/// event before reading, so we read the finished file once.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Owns the single `watch::Sender` of the live config.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    tx: watch::Sender<Arc<Config>>,
    status: Arc<ReloadStatus>,
}

/// How reloads have gone, for `/healthz` and `/metrics`: an invalid file is
/// not only logged, it stays visible until a good one applies.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    failed: AtomicU64,
    stale: Mutex<Option<String>>,
}

impl ReloadStatus {
    /// Reloads refused as invalid since start.
    pub fn failed_total(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// While the file on disk does not apply: why (file:line:col: ...), so
    /// the config in force is older than the file.
    pub fn stale(&self) -> Option<String> {
        self.stale.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, result: &Result<(), ConfigError>) {
        let mut stale = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => *stale = None,
            Err(error) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                // The first problem is enough to point at; the log has all.
                *stale = Some(
                    error
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    }
}

impl Reloader {
    /// Start with `initial`, read from `path`.
    pub fn new(path: &Path, initial: Config) -> Self {
        let (tx, _) = watch::channel(Arc::new(initial));
        Self {
            path: path.to_owned(),
            tx,
            status: Arc::default(),
        }
    }

    /// How reloads have gone (shared; it stays current).
    pub fn status(&self) -> Arc<ReloadStatus> {
        Arc::clone(&self.status)
    }

    /// A receiver of the live config, for a server.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }

    /// Read the file again; publish the new config if it is valid.
    /// On error the old config stays in force and the error is returned.
    /// Blocking file I/O (the loop of [`Reloader::start`] runs it on a
    /// blocking thread).
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config = load(&self.path)?;
        self.tx.send_replace(Arc::new(config));
        Ok(())
    }

    fn reload_and_log(&self, trigger: &'static str) {
        let running = self.tx.borrow().clone();
        let result = self.reload();
        self.status.record(&result);
        match result {
            Ok(()) => {
                tracing::info!(
                    event = "reload",
                    trigger,
                    result = "ok",
                    "configuration reloaded"
                );
                let pending = restart_needed(&running, &self.tx.borrow());
                if !pending.is_empty() {
                    tracing::warn!(
                        event = "reload",
                        trigger,
                        restart_needed = %pending.join(", "),
                        "these settings changed but apply only after a restart"
                    );
                }
            }
            Err(error) => tracing::error!(
                event = "reload",
                trigger,
                result = "invalid",
                error = %error,
                "configuration not reloaded; the previous one stays in force"
            ),
        }
    }

    /// Install the SIGHUP handler and the file watch now, and return the loop
    /// that reloads on them until `shutdown`. Installing before returning means
    /// that once the caller says "ready", no change and no SIGHUP is missed
    /// (and a SIGHUP cannot hit the default action, which would kill us).
    pub fn start(
        self,
        shutdown: CancellationToken,
    ) -> Result<impl Future<Output = ()> + Send, std::io::Error> {
        let (file_tx, mut file_rx) = mpsc::channel::<()>(1);
        let name = self.path.file_name().map(ToOwned::to_owned);
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        // Watch the folder, not the file: a rename-replace (vim, Ansible,
        // Salt) swaps the inode, and a watch on the old inode would go quiet.
        // Without a watcher (inotify limits reached) SIGHUP still works.
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res
                && event.paths.iter().any(|p| p.file_name() == name.as_deref())
                && !event.kind.is_access()
            {
                // A full channel already holds a pending reload: nothing is lost.
                let _ = file_tx.try_send(());
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, dir = %dir.display(), "cannot watch the config folder; reload with SIGHUP");
                None
            }
        };

        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let this = Arc::new(self);
        Ok(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hup.recv() => Self::reload_off_runtime(&this, "sighup").await,
                    Some(()) = file_rx.recv() => {
                        // Let the writer finish, then fold every event since into one reload.
                        tokio::time::sleep(DEBOUNCE).await;
                        while file_rx.try_recv().is_ok() {}
                        Self::reload_off_runtime(&this, "file").await;
                    }
                }
            }
        })
    }

    /// A reload reads the config and every file it names (`keys_file`,
    /// secrets): blocking I/O, so on a blocking thread, never on a thread
    /// that serves DNS or SSH (issue 23, item 6). One at a time: the loop
    /// waits for it.
    async fn reload_off_runtime(this: &Arc<Self>, trigger: &'static str) {
        let reloader = Arc::clone(this);
        if let Err(error) =
            tokio::task::spawn_blocking(move || reloader.reload_and_log(trigger)).await
        {
            tracing::error!(event = "reload", trigger, %error, "the reload thread failed; the previous configuration stays in force");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::restart_needed;
    use crate::load::parse;

    const BASE: &str = "jump:\n  listen: [\"127.0.0.1:2222\"]\n  users: {}\ndns:\n  listen: [\"127.0.0.1:10053\"]\n  zones:\n    sean:\n      records: { saxophone: 192.168.222.16 }\n";

    fn config(text: &str) -> crate::Config {
        parse(Path::new("gatehouse.yaml"), text).expect("valid config")
    }

    #[test]
    fn records_users_and_limits_apply_live() {
        let running = config(BASE);
        let new = config(&BASE.replace(
            "saxophone: 192.168.222.16",
            "saxophone: 192.168.222.16, trumpet: 192.168.222.18",
        ));
        assert!(restart_needed(&running, &new).is_empty());
        assert!(restart_needed(&running, &running).is_empty());
    }

    #[test]
    fn listeners_state_and_log_need_a_restart() {
        let running = config(BASE);
        let moved = config(
            &BASE
                .replace("127.0.0.1:2222", "0.0.0.0:11122")
                .replace("127.0.0.1:10053", "192.168.222.2:53"),
        );
        assert_eq!(
            restart_needed(&running, &moved),
            ["jump.listen", "dns.listen"]
        );
        let more = config(&format!(
            "state_dir: /var/lib/elsewhere\nlog: {{ level: debug }}\nadmin: {{ listen: 127.0.0.1:9100 }}\n{BASE}"
        ));
        assert_eq!(
            restart_needed(&running, &more),
            ["state_dir", "log", "admin.listen"]
        );
        // A server added or removed is a listener change too.
        let no_dns = config(BASE.split("dns:").next().expect("jump part"));
        assert_eq!(restart_needed(&running, &no_dns), ["dns.listen"]);
    }
}
