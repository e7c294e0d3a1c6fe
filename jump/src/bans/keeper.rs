//! The running server's ban list and its file, owned in one place.
//!
//! Connections count failures and the accept loop asks "banned?" in memory
//! only; every read and write of `bans.json` happens in [`BanKeeper::run`],
//! one task, on a blocking thread. So a slow disk never stalls a connection
//! thread, writes are batched (one write per burst of new bans), and two
//! writes can never race each other and bring back an older list. Must not
//! decide what counts as a failure: the server says so.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use gatehouse_config::BanPolicy;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    file::BanFile,
    list::{Ban, BanList},
};
use crate::{
    audit::{self, AuditEvent, Who},
    clock::unix_now,
    error::JumpError,
};

/// Fleet-wide lifts remembered, at most.
const MAX_LIFTS: usize = 4096;

/// The ban list in memory and on disk.
#[derive(Debug)]
pub(crate) struct BanKeeper {
    list: Mutex<BanList>,
    file: BanFile,
    disk: Mutex<Disk>,
    /// Set by a change that is not on disk yet.
    dirty: AtomicBool,
    /// Fleet-wide lifts applied here: the address and when the lift was
    /// issued. A ban issued before a lift covering it is not adopted again
    /// (a host that missed the lift must not bring it back).
    lifts: Mutex<HashMap<IpAddr, u64>>,
    changed: Notify,
}

/// What the file held when we last wrote or read it.
#[derive(Debug, Default)]
struct Disk {
    /// Its mtime then: a different one means someone else wrote it.
    seen: Option<SystemTime>,
    /// Its bans then: a ban in memory that differs from these is ours and
    /// newer than the file.
    bans: HashMap<(IpAddr, u8), Ban>,
}

fn by_source(bans: &[Ban]) -> HashMap<(IpAddr, u8), Ban> {
    bans.iter().map(|b| (key(b), b.clone())).collect()
}

fn key(ban: &Ban) -> (IpAddr, u8) {
    (ban.source, ban.prefix)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JumpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(JumpError::Blocking)
}

impl BanKeeper {
    /// Load `state_dir/bans.json`. Blocking: call it before serving, on a
    /// blocking thread.
    pub(crate) fn open(state_dir: &Path, policy: &BanPolicy) -> Result<BanKeeper, JumpError> {
        let file = BanFile::new(state_dir);
        let stored = file.load()?;
        let disk = Disk {
            seen: file.modified(),
            bans: by_source(&stored),
        };
        let mut list = BanList::from_bans(stored);
        list.purge(policy, SystemTime::now());
        Ok(BanKeeper {
            list: Mutex::new(list),
            file,
            disk: Mutex::new(disk),
            dirty: AtomicBool::new(false),
            lifts: Mutex::default(),
            changed: Notify::new(),
        })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, BanList> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is `ip` banned at `now`? Memory only.
    pub(crate) fn banned(&self, ip: IpAddr, now: SystemTime) -> bool {
        self.list().banned(ip, now).is_some()
    }

    /// Count a failure from `who` (the caller has checked `trusted`). A ban
    /// it triggers is in force at once and audited here; the file follows
    /// from [`BanKeeper::run`]. The bans it made (the source's, and wider
    /// networks it escalated to).
    pub(crate) fn fail(
        &self,
        who: &Who,
        user: Option<&str>,
        reason: &str,
        policy: &BanPolicy,
    ) -> Vec<Ban> {
        audit::failure(who, user, reason);
        let changed = self
            .list()
            .failure(who.peer.ip(), policy, Instant::now(), SystemTime::now());
        self.changed(changed)
    }

    /// The fleet counted enough failures from `ip` on all hosts together:
    /// ban it here (audited, as [`BanKeeper::fail`] would). The bans made.
    pub(crate) fn fleet_reached(&self, ip: IpAddr, policy: &BanPolicy) -> Vec<Ban> {
        let changed = self.list().fleet_reached(ip, policy, SystemTime::now());
        self.changed(changed)
    }

    /// A ban another host of the fleet made (signed, issued at `issued`):
    /// in force here at once if it is new or longer than ours (audited
    /// `ban_adopted`), ending at most `max` from now, and saved. Not if a
    /// fleet-wide lift covering it was issued after it.
    pub(crate) fn adopt(&self, ban: Ban, issued: u64, max: Duration) {
        let lifted = self
            .lifts()
            .iter()
            .any(|(&addr, &at)| at >= issued && ban.covers(addr));
        if lifted {
            return;
        }
        let (source, prefix) = (ban.source, ban.prefix);
        let mut list = self.list();
        if list.adopt(ban, max, SystemTime::now()) {
            let until = list
                .bans()
                .iter()
                .find(|b| b.source == source && b.prefix == prefix)
                .map_or(0, |b| b.until);
            drop(list);
            audit::emit(&AuditEvent::BanAdopted {
                source,
                prefix,
                until,
            });
            self.dirty.store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A fleet-wide lift of every ban covering `addr`, issued at `issued`
    /// (`gatehouse bans lift` on some host): applied once (audited
    /// `ban_lifted` if a ban was in force here), remembered so that bans
    /// issued before it are not adopted again.
    pub(crate) fn lift_fleet(&self, addr: IpAddr, issued: u64) {
        {
            let mut lifts = self.lifts();
            if lifts.get(&addr).is_some_and(|&at| at >= issued) {
                return;
            }
            // Bounded: lifts come signed, from operators; the oldest go.
            if lifts.len() >= MAX_LIFTS
                && let Some(oldest) = lifts.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a)
            {
                lifts.remove(&oldest);
            }
            lifts.insert(addr, issued);
        }
        if self.list().lift(addr, SystemTime::now()) {
            audit::emit(&AuditEvent::BanLifted { source: addr });
        }
        self.dirty.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    fn lifts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u64>> {
        self.lifts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bans in force now.
    pub(crate) fn in_force(&self) -> Vec<Ban> {
        let now = unix_now();
        let mut bans = self.list().bans();
        bans.retain(|b| b.until > now);
        bans
    }

    /// Audit what one change did and have it saved; the new bans.
    fn changed(&self, changed: super::list::Banned) -> Vec<Ban> {
        for old in &changed.evicted {
            audit::emit(&AuditEvent::BanEvicted {
                source: old.source,
                prefix: old.prefix,
                until: old.until,
            });
        }
        for ban in &changed.new {
            audit::emit(&AuditEvent::Ban {
                source: ban.source,
                prefix: ban.prefix,
                count: ban.count,
                seconds: ban.until.saturating_sub(unix_now()),
                until: ban.until,
            });
        }
        if !changed.new.is_empty() {
            self.dirty.store(true, Ordering::Release);
            self.changed.notify_one();
        }
        changed.new
    }

    /// Forget bans long over (memory; the next write drops them from the file).
    pub(crate) fn purge(&self, policy: &BanPolicy, now: SystemTime) {
        self.list().purge(policy, now);
    }

    /// Persist changes as they come and notice outside edits every `tick`,
    /// until `shutdown`; then write what is left once more.
    pub(crate) async fn run(&self, tick: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(tick);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.changed.notified() => {}
                _ = ticks.tick() => {}
            }
            self.sync().await;
        }
        self.sync().await;
    }

    /// Read the file if someone else changed it, then write ours if needed.
    async fn sync(&self) {
        if let Err(error) = self.reread().await {
            warn!(%error, "cannot read the ban list; keeping the one in memory");
        }
        if self.dirty.swap(false, Ordering::AcqRel)
            && let Err(error) = self.write().await
        {
            // Tried again at the next tick.
            self.dirty.store(true, Ordering::Release);
            warn!(%error, "cannot persist the ban list");
        }
    }

    /// Pick up `gatehouse bans lift` (or any edit from outside): the file's
    /// bans, plus ours that are newer than the file.
    async fn reread(&self) -> Result<(), JumpError> {
        let file = self.file.clone();
        let modified = blocking(move || file.modified()).await?;
        if self.disk().seen == modified {
            return Ok(());
        }
        let file = self.file.clone();
        let stored = blocking(move || file.load()).await??;
        let now = SystemTime::now();
        let mut disk = self.disk();
        let mut list = self.list();
        let mut merged = by_source(&stored);
        let mut ours_newer = false;
        for mine in list.bans() {
            let on_disk_before = disk.bans.get(&key(&mine));
            if on_disk_before != Some(&mine) {
                // Not written yet (or changed since): keep it.
                ours_newer = true;
                merged.insert(key(&mine), mine);
            } else if !merged.contains_key(&key(&mine)) && mine.until > crate::clock::unix(now) {
                audit::emit(&AuditEvent::BanLifted {
                    source: mine.source,
                });
            }
        }
        list.set_bans(merged.into_values().collect());
        disk.seen = modified;
        disk.bans = by_source(&stored);
        if ours_newer {
            self.dirty.store(true, Ordering::Release);
        }
        Ok(())
    }

    async fn write(&self) -> Result<(), JumpError> {
        let snapshot = self.list().bans();
        let file = self.file.clone();
        let saved = snapshot.clone();
        let modified = blocking(move || file.save(&saved).map(|()| file.modified())).await??;
        let mut disk = self.disk();
        disk.seen = modified;
        disk.bans = by_source(&snapshot);
        Ok(())
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, num::NonZeroU32, sync::Arc};

    use super::*;

    fn policy() -> BanPolicy {
        BanPolicy {
            after: NonZeroU32::MIN,
            within: Duration::from_secs(60),
            duration: Duration::from_secs(600),
            max: Duration::from_secs(3600),
        }
    }

    fn who(addr: &str) -> Who {
        Who {
            conn: 1,
            peer: addr.parse::<SocketAddr>().expect("addr"),
        }
    }

    fn banned_in(file: &BanFile) -> Vec<String> {
        let mut sources: Vec<String> = file
            .load()
            .expect("load")
            .iter()
            .map(|b| b.source.to_string())
            .collect();
        sources.sort();
        sources
    }

    /// What [`BanKeeper::run`] does on each change or tick, driven here one
    /// step at a time: no ticks and no sleeps.
    #[tokio::test]
    async fn a_ban_is_written_and_an_outside_lift_is_kept_without_losing_newer_bans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keeper = BanKeeper::open(dir.path(), &policy()).expect("open");
        let file = BanFile::new(dir.path());
        keeper
            .fail(&who("192.0.2.1:1"), None, "test", &policy())
            .first()
            .expect("banned");
        keeper.sync().await;
        assert_eq!(banned_in(&file), ["192.0.2.1"]);

        // `gatehouse bans lift 192.0.2.1` from outside, while a new ban is
        // in memory only: the lift holds and the new ban survives.
        keeper.dirty.store(false, Ordering::Release);
        let mut edited = BanList::from_bans(file.load().expect("load"));
        edited.lift("192.0.2.1".parse().expect("ip"), SystemTime::now());
        let _ = keeper.list().failure(
            "192.0.2.2".parse().expect("ip"),
            &policy(),
            Instant::now(),
            SystemTime::now(),
        );
        let ours = file.modified().expect("mtime");
        file.save(&edited.bans()).expect("outside write");
        // Written later than ours: a second on, not a sleep until the
        // file system's clock ticks.
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("bans.json"))
            .and_then(|f| f.set_modified(ours + Duration::from_secs(1)))
            .expect("set mtime");
        keeper.sync().await;
        let now = SystemTime::now();
        assert!(
            !keeper.banned("192.0.2.1".parse().expect("ip"), now),
            "the lift is noticed"
        );
        assert!(
            keeper.banned("192.0.2.2".parse().expect("ip"), now),
            "the newer ban is kept"
        );
        assert_eq!(banned_in(&file), ["192.0.2.2"], "and written");
    }

    /// The keeper's task writes a ban when it is made, not at its next tick
    /// (an hour away on this paused clock, which moves only when all else
    /// waits), and writes what is left at shutdown.
    #[tokio::test(start_paused = true)]
    async fn run_writes_a_ban_when_made_and_at_shutdown() {
        const TICK: Duration = Duration::from_secs(3600);
        let dir = tempfile::tempdir().expect("tempdir");
        let keeper = Arc::new(BanKeeper::open(dir.path(), &policy()).expect("open"));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (keeper, stop) = (Arc::clone(&keeper), stop.clone());
            async move { keeper.run(TICK, stop).await }
        });
        let file = BanFile::new(dir.path());
        let started = tokio::time::Instant::now();
        keeper
            .fail(&who("192.0.2.1:1"), None, "test", &policy())
            .first()
            .expect("banned");
        // File I/O runs on blocking threads, which hold this clock still.
        while file.load().map_or(true, |b| b.is_empty()) {
            assert!(started.elapsed() < TICK, "written only at the tick");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(banned_in(&file), ["192.0.2.1"]);
        // Marked for saving with no notice to the task, then shutdown: the
        // last sync writes it.
        let _ = keeper.list().failure(
            "192.0.2.2".parse().expect("ip"),
            &policy(),
            Instant::now(),
            SystemTime::now(),
        );
        keeper.dirty.store(true, Ordering::Release);
        stop.cancel();
        task.await.expect("keeper task");
        assert_eq!(banned_in(&file), ["192.0.2.1", "192.0.2.2"]);
    }

    /// A FIFO in place of the ban file (a read that would wait for a
    /// writer forever) is refused at once, not read (issue 23, item 6): the
    /// bans in memory stay in force, and the next save replaces it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_fifo_in_place_of_the_ban_file_is_refused_then_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let keeper = BanKeeper::open(dir.path(), &policy()).expect("open");
        let path = dir.path().join("bans.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let err = BanFile::new(dir.path()).load().expect_err("a FIFO");
        assert!(
            err.to_string()
                .ends_with("bans.json: not a regular file (a FIFO)"),
            "{err}"
        );
        keeper
            .fail(&who("192.0.2.9:1"), None, "test", &policy())
            .first()
            .expect("banned");
        assert!(keeper.banned("192.0.2.9".parse().expect("ip"), SystemTime::now()));
        // The FIFO is refused (not read: that would hang this test), and
        // the save replaces it.
        keeper.sync().await;
        let saved = std::fs::symlink_metadata(&path).expect("stat");
        assert!(!saved.file_type().is_fifo(), "{saved:?}");
        assert_eq!(banned_in(&BanFile::new(dir.path())), ["192.0.2.9"]);
    }
}
