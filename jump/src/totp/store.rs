//! [`TotpStore`]: the enrollments under `state_dir/totp/`, one JSON file
//! per user, and the per-user locks and code limit that make a code count
//! once. Blocking file I/O runs on blocking threads for the server (the
//! `*_async` methods and `verify`); the sync methods are the CLI's.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use super::{Enrollment, Secret, Status};
use crate::{error::JumpError, fleet::Fleet, limits::UserCodeLimit, store};

/// `state_dir/totp/USER`. For users whose secret configuration management
/// provisions (`totp_secret_file`), `secret` is absent: the file then only
/// keeps this host's replay state.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollmentFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    last_step: Option<u64>,
    #[serde(default)]
    recovery: Vec<String>,
}

/// The enrollments under `state_dir/totp/`.
#[derive(Debug)]
pub struct TotpStore {
    pub(super) files: Files,
    /// One lock per user, so two logins of the same user cannot both use one
    /// step, and two enrollments cannot both be stored. Keys are configured
    /// users only (a key was verified first).
    pub(super) locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// google-authenticator's RATE_LIMIT 3 30, per user.
    pub(super) code_limit: Mutex<UserCodeLimit>,
    /// A fleet's Redis: steps used and wrong codes, shared by every host.
    pub(super) fleet: Option<Arc<Fleet>>,
    /// What this host has seen of the fleet's enrollments.
    pub(super) seen: super::seen::SeenFile,
    /// The highest step used per user on this host (with a fleet).
    pub(super) floor: super::floor::FloorFile,
    /// MFA graces, with local state (issue 28).
    pub(super) graces: super::grace::GraceFile,
}

/// The files themselves: blocking I/O, run on a blocking thread by the
/// async methods of [`TotpStore`] (never on a connection's thread).
#[derive(Clone, Debug)]
pub(super) struct Files {
    dir: PathBuf,
}

/// Run `f` on `files` on a blocking thread.
pub(super) async fn blocking<T: Send + 'static>(
    files: &Files,
    f: impl FnOnce(&Files) -> Result<T, JumpError> + Send + 'static,
) -> Result<T, JumpError> {
    let files = files.clone();
    tokio::task::spawn_blocking(move || f(&files))
        .await
        .map_err(JumpError::Blocking)?
}

impl Files {
    pub(super) fn path(&self, user: &str) -> PathBuf {
        self.dir.join(user)
    }

    fn read_file(&self, user: &str) -> Result<Option<EnrollmentFile>, JumpError> {
        let path = self.path(user);
        // Trusted only if this user wrote it: anyone who could plant an
        // enrollment would choose the user's secret.
        let Some((bytes, _)) = store::read_trusted(&path, &store::ENROLLMENT)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| JumpError::StateFormat { path, source })
    }

    pub(super) fn load(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Option<Enrollment>, JumpError> {
        let file = self.read_file(user)?;
        let secret = match (provisioned, file.as_ref().and_then(|f| f.secret.as_deref())) {
            (Some(path), _) => gatehouse_config::read_totp_secret_file(path)
                .map(Secret)
                .map_err(|source| JumpError::SecretFile {
                    path: path.to_owned(),
                    source,
                })?,
            (None, Some(text)) => {
                Secret::from_base32(text).map_err(|why| JumpError::StateValue {
                    path: self.path(user),
                    reason: why.to_string(),
                })?
            }
            (None, None) => return Ok(None),
        };
        let file = file.unwrap_or_default();
        Ok(Some(Enrollment {
            secret,
            created: file.created,
            last_step: file.last_step,
            recovery: file.recovery,
        }))
    }

    /// The file for `enrollment`: with its secret unless `provisioned`.
    fn encode(
        &self,
        user: &str,
        enrollment: &Enrollment,
        provisioned: bool,
    ) -> Result<(PathBuf, Vec<u8>), JumpError> {
        let path = self.path(user);
        let file = EnrollmentFile {
            secret: (!provisioned).then(|| enrollment.secret.to_base32()),
            created: enrollment.created,
            last_step: enrollment.last_step,
            recovery: enrollment.recovery.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|source| JumpError::StateFormat {
            path: path.clone(),
            source,
        })?;
        store::private_dir(&self.dir).map_err(|source| JumpError::State {
            path: self.dir.clone(),
            source,
        })?;
        Ok((path, json))
    }

    pub(super) fn save(
        &self,
        user: &str,
        enrollment: &Enrollment,
        provisioned: bool,
    ) -> Result<(), JumpError> {
        let (path, json) = self.encode(user, enrollment, provisioned)?;
        store::write_atomic(&path, &json).map_err(|source| JumpError::State { path, source })
    }

    pub(super) fn create(&self, user: &str, enrollment: &Enrollment) -> Result<bool, JumpError> {
        let (path, json) = self.encode(user, enrollment, false)?;
        store::create_atomic(&path, &json).map_err(|source| JumpError::State { path, source })
    }
}

impl TotpStore {
    /// The store in `state_dir/totp`.
    pub fn new(state_dir: &Path) -> TotpStore {
        TotpStore {
            files: Files {
                dir: state_dir.join("totp"),
            },
            locks: Mutex::default(),
            code_limit: Mutex::default(),
            fleet: None,
            seen: super::seen::SeenFile::new(state_dir),
            floor: super::floor::FloorFile::new(state_dir),
            graces: super::grace::GraceFile::new(state_dir),
        }
    }

    /// Share used steps and wrong codes with the rest of `fleet`.
    pub(crate) fn with_fleet(mut self, fleet: Arc<Fleet>) -> TotpStore {
        self.fleet = Some(fleet);
        self
    }

    pub(super) fn lock_for(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(user.to_owned()).or_default().clone()
    }

    /// The user's enrollment, if any. `provisioned` is the user's
    /// `totp_secret_file`: its secret wins over anything stored here.
    /// Blocking: the CLI's; the server uses [`TotpStore::load_async`].
    pub(crate) fn load(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Option<Enrollment>, JumpError> {
        self.files.load(user, provisioned)
    }

    /// [`TotpStore::load`] on a blocking thread (this host's files only).
    pub(super) async fn load_file_async(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Option<Enrollment>, JumpError> {
        let (user, provisioned) = (user.to_owned(), provisioned.map(Path::to_owned));
        blocking(&self.files, move |f| f.load(&user, provisioned.as_deref())).await
    }

    /// Store a new enrollment unless the user already has one. Two
    /// enrollments at once (two sessions, or a session and the CLI): the
    /// first to confirm wins, the other gets false and nothing changes.
    #[cfg(test)]
    pub(crate) fn create(&self, user: &str, enrollment: &Enrollment) -> Result<bool, JumpError> {
        self.files.create(user, enrollment)
    }

    /// [`TotpStore::create`] on a blocking thread (this host's files only).
    pub(super) async fn create_file_async(
        &self,
        user: &str,
        enrollment: &Enrollment,
    ) -> Result<bool, JumpError> {
        let (user, enrollment) = (user.to_owned(), enrollment.clone());
        blocking(&self.files, move |f| f.create(&user, &enrollment)).await
    }

    /// Is there an enrollment file for `user` (on a blocking thread)? Gone
    /// after `gatehouse totp reset`, which the server notices this way.
    pub(super) async fn has_file(&self, user: &str) -> Result<bool, JumpError> {
        let user = user.to_owned();
        blocking(&self.files, move |f| {
            let path = f.path(&user);
            path.try_exists()
                .map_err(|source| JumpError::State { path, source })
        })
        .await
    }

    /// Remove the user's enrollment (`gatehouse totp reset`). Returns whether one existed.
    pub fn remove(&self, user: &str) -> Result<bool, JumpError> {
        let path = self.files.path(user);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(JumpError::State { path, source }),
        }
    }

    /// What `gatehouse totp status` shows; `None` when not enrolled.
    pub fn status(
        &self,
        user: &str,
        provisioned: Option<&Path>,
    ) -> Result<Option<Status>, JumpError> {
        Ok(self.load(user, provisioned)?.map(|e| Status {
            created: (e.created > 0).then_some(e.created),
            recovery_left: e.recovery.len(),
            provisioned: provisioned.is_some(),
        }))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::{
        recovery,
        totp::{
            CodeRefusal, Verdict,
            tests::{RFC_SECRET, settings},
        },
    };

    fn enrollment(recovery: Vec<String>) -> Enrollment {
        Enrollment {
            secret: Secret(RFC_SECRET.to_vec()),
            created: 1,
            last_step: None,
            recovery,
        }
    }

    #[tokio::test]
    async fn verify_persists_the_used_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        let s = settings();
        assert_eq!(
            store
                .verify("sean", None, &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::NotEnrolled
        );
        assert!(
            store
                .create("sean", &enrollment(Vec::new()))
                .expect("create")
        );
        assert_eq!(
            store
                .verify("sean", None, &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::Code { step: 1 }
        );
        // A new store (a restart) still refuses the same step.
        let again = TotpStore::new(dir.path());
        assert_eq!(
            again
                .verify("sean", None, &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::Refused(CodeRefusal::Replayed)
        );
    }

    #[tokio::test]
    async fn the_first_enrollment_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        assert!(
            store
                .create("sean", &enrollment(Vec::new()))
                .expect("create")
        );
        let other = Enrollment {
            secret: Secret::generate(),
            ..enrollment(Vec::new())
        };
        assert!(!store.create("sean", &other).expect("create"));
        let kept = store.load("sean", None).expect("load").expect("enrolled");
        assert_eq!(kept.secret, Secret(RFC_SECRET.to_vec()));
        assert!(store.remove("sean").expect("remove"));
        assert!(!store.remove("sean").expect("remove"));
    }

    /// Issue 23 item 7: whoever can write in `state_dir/totp` must not
    /// choose a user's secret. A planted enrollment (another owner, or
    /// writable by others) is refused, not taken as "not enrolled" either.
    #[tokio::test]
    async fn a_planted_enrollment_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        let s = settings();
        let planted = dir.path().join("totp/sean");
        // The RFC 6238 secret: the attacker knows the codes.
        let json = br#"{"secret":"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ","created":1}"#;
        store::private_dir(&dir.path().join("totp")).expect("totp/");
        store::write_atomic(&planted, json).expect("plant");
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown (as root)");
        let refused = store.verify("sean", None, &s, "287082", 59).await;
        assert!(
            matches!(&refused, Err(JumpError::UntrustedStateFile { path, .. }) if *path == planted),
            "{refused:?}"
        );
        assert!(matches!(
            store.load("sean", None),
            Err(JumpError::UntrustedStateFile { .. })
        ));
        // Ours, but writable by the group: refused too.
        std::os::unix::fs::chown(&planted, Some(nix::unistd::geteuid().as_raw()), None)
            .expect("chown back");
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o620)).expect("chmod");
        let err = store.load("sean", None).expect_err("group-writable");
        assert!(
            err.to_string().ends_with("has mode 0620: it must not be group- or world-writable (chmod go-w it); not trusted"),
            "{err}"
        );
        // The same file as gatehouse writes it (ours, 0600) is used.
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            store
                .verify("sean", None, &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::Code { step: 1 }
        );
    }

    #[tokio::test]
    async fn recovery_codes_work_once_and_are_stored_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        let codes = recovery::generate();
        let hashes = codes
            .iter()
            .map(|c| recovery::hash(c).expect("hash"))
            .collect();
        assert!(store.create("sean", &enrollment(hashes)).expect("create"));
        let on_disk = std::fs::read_to_string(dir.path().join("totp/sean")).expect("read");
        assert!(
            codes.iter().all(|c| !on_disk.contains(c.as_str())),
            "never in clear"
        );
        let s = settings();
        let typed = codes[3].to_uppercase();
        assert_eq!(
            store
                .verify("sean", None, &s, &typed, 59)
                .await
                .expect("io"),
            Verdict::Recovery { left: 7 }
        );
        assert_eq!(
            store
                .verify("sean", None, &s, &codes[3], 59)
                .await
                .expect("io"),
            Verdict::Refused(CodeRefusal::Wrong),
            "used up"
        );
    }

    #[tokio::test]
    async fn three_wrong_codes_lock_the_user_briefly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        assert!(
            store
                .create("sean", &enrollment(Vec::new()))
                .expect("create")
        );
        let s = settings();
        for _ in 0..3 {
            assert_eq!(
                store
                    .verify("sean", None, &s, "000000", 59)
                    .await
                    .expect("io"),
                Verdict::Refused(CodeRefusal::Wrong)
            );
        }
        assert_eq!(
            store
                .verify("sean", None, &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::Limited
        );
    }

    #[tokio::test]
    async fn a_provisioned_secret_keeps_only_replay_state_here() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = dir.path().join("sean.totp");
        let b32 = Secret(RFC_SECRET.to_vec()).to_base32();
        std::fs::write(&secret_file, format!("{b32}\n")).expect("write");
        let store = TotpStore::new(&dir.path().join("state"));
        let s = settings();
        std::fs::set_permissions(
            &secret_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
        assert!(
            store
                .verify("sean", Some(&secret_file), &s, "287082", 59)
                .await
                .is_err(),
            "0644 refused"
        );
        std::fs::set_permissions(
            &secret_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o400),
        )
        .expect("chmod");
        assert_eq!(
            store
                .verify("sean", Some(&secret_file), &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::Code { step: 1 }
        );
        let state = std::fs::read_to_string(dir.path().join("state/totp/sean")).expect("state");
        assert!(
            !state.contains(&b32),
            "the provisioned secret is not copied: {state}"
        );
        assert_eq!(
            store
                .verify("sean", Some(&secret_file), &s, "287082", 59)
                .await
                .expect("io"),
            Verdict::Refused(CodeRefusal::Replayed)
        );
    }

    /// A provisioned secret on a FIFO (a read that would wait for a writer
    /// forever) is refused at once, never read (issue 23, item 6).
    #[tokio::test(flavor = "current_thread")]
    async fn a_fifo_for_a_secret_file_is_refused_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("sean.totp");
        nix::unistd::mkfifo(
            &fifo,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .expect("mkfifo");
        let store = TotpStore::new(&dir.path().join("state"));
        let refused = store
            .verify("sean", Some(&fifo), &settings(), "287082", 59)
            .await
            .expect_err("a FIFO");
        assert!(
            refused
                .to_string()
                .ends_with("sean.totp: cannot read: not a regular file (a FIFO)"),
            "{refused}"
        );
    }
}
