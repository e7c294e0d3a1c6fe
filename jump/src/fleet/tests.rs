//! The fleet's scripts against a real redis-server (on a Unix socket in a
//! temporary directory: no port to race for), where a race between hosts
//! can be set up step by step.

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use gatehouse_config::{OnOutage, RedisState, RedisTarget};

use super::{Fleet, Mark, Stored};
use crate::totp::{Enrollment, Secret};

/// redis-server on `dir/redis.sock`, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(dir: &Path) -> Server {
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (tests/run installs it)");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn key_file(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, [byte; 32]).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

async fn fleet(dir: &Path, key: u8, previous: Option<u8>) -> Fleet {
    let state = RedisState {
        target: RedisTarget::Url(format!("redis+unix://{}", dir.join("redis.sock").display())),
        password_file: None,
        ca_file: None,
        key_prefix: "t:".into(),
        seal_key_file: Some(key_file(dir, &format!("{key}.key"), key)),
        previous_seal_key_files: previous
            .map(|p| key_file(dir, &format!("{p}.key"), p))
            .into_iter()
            .collect(),
        on_outage: OnOutage::Closed,
    };
    let fleet = Fleet::new(&state).expect("fleet");
    fleet.connect_once().await.expect("connected");
    fleet
}

fn enrollment() -> Enrollment {
    Enrollment {
        secret: Secret(vec![7; 20]),
        created: 5,
        last_step: Some(3),
        recovery: vec!["hash-1".into(), "hash-2".into()],
    }
}

/// Issue 24: re-sealing was a plain HSET, so a host re-sealing what it had
/// just read brought back an enrollment `totp reset` removed meanwhile.
#[tokio::test]
async fn a_reseal_never_brings_back_an_enrollment_reset_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _redis = server(dir.path());
    let old = fleet(dir.path(), 1, None).await;
    assert!(
        old.create_enrollment("ana", &enrollment(), 1)
            .await
            .expect("create")
    );
    let rolled = fleet(dir.path(), 2, Some(1)).await;
    // What the rolling host read, then the reset, then its re-seal.
    let mut conn = rolled.connection().expect("conn");
    let read: Option<String> = redis::AsyncCommands::hget(&mut conn, "t:enrollment:ana", "mac")
        .await
        .expect("hget");
    let read = read.expect("a MAC");
    assert!(old.remove_enrollment("ana", 10, None).await.expect("reset"));
    rolled
        .reseal("ana", "t:enrollment:ana", &read, &[7; 20], 5, 1)
        .await;
    let exists: bool = redis::AsyncCommands::exists(&mut conn, "t:enrollment:ana")
        .await
        .expect("exists");
    assert!(!exists, "the reset enrollment came back");
    assert!(matches!(
        rolled.load_enrollment("ana").await.expect("load"),
        Stored::Reset(Mark {
            at: 10,
            generation: 1
        })
    ));

    // Without a reset in between, reading re-seals (and signs again, the
    // recovery codes and the used step too) under the new key: the old key
    // alone no longer opens it, the new one alone does.
    let after_reset = Enrollment {
        created: 20,
        ..enrollment()
    };
    assert!(
        old.create_enrollment("ana", &after_reset, 2)
            .await
            .expect("create")
    );
    assert!(matches!(
        rolled.load_enrollment("ana").await.expect("load"),
        Stored::Enrolled(_, Mark { generation: 2, .. })
    ));
    assert!(matches!(
        old.load_enrollment("ana").await.expect("load"),
        Stored::Refused(_)
    ));
    let newest = fleet(dir.path(), 2, None).await;
    let Stored::Enrolled(read, Mark { generation: 2, .. }) =
        newest.load_enrollment("ana").await.expect("load")
    else {
        panic!("not readable with the new key alone");
    };
    let mut codes = read.recovery.clone();
    codes.sort();
    assert_eq!(codes, ["hash-1", "hash-2"]);
    assert_eq!(read.last_step, Some(3));
}

/// Issue 26: the highest security-key counter, shared by hosts, forged by
/// nobody without the seal key.
#[tokio::test]
async fn security_key_counters_are_shared_and_unforgeable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _redis = server(dir.path());
    let (a, b) = (
        fleet(dir.path(), 1, None).await,
        fleet(dir.path(), 1, None).await,
    );
    assert_eq!(
        a.raise_sk_counter("ana", "SHA256:k", 10).await.expect("a"),
        None
    );
    // Another host sees what the first saw.
    assert_eq!(
        b.raise_sk_counter("ana", "SHA256:k", 12).await.expect("b"),
        Some(10)
    );
    // A lower counter never lowers it.
    assert_eq!(
        a.raise_sk_counter("ana", "SHA256:k", 5).await.expect("a"),
        Some(12)
    );
    assert_eq!(
        a.raise_sk_counter("ana", "SHA256:k", 13).await.expect("a"),
        Some(12)
    );
    // Per user and key.
    assert_eq!(
        a.raise_sk_counter("bob", "SHA256:k", 1).await.expect("a"),
        None
    );

    let mut conn = a.connection().expect("conn");
    let key = "t:sk-counter:ana:SHA256:k";
    // A forged higher counter (to make a genuine login look cloned) is
    // refused, not believed, and replaced by the signed one.
    let forged = format!("4000000000:{}", "0".repeat(64));
    let () = redis::AsyncCommands::set(&mut conn, key, &forged)
        .await
        .expect("set");
    assert_eq!(
        a.raise_sk_counter("ana", "SHA256:k", 14).await.expect("a"),
        None
    );
    assert_eq!(
        a.raise_sk_counter("ana", "SHA256:k", 15).await.expect("a"),
        Some(14)
    );
    // bob's genuine value moved onto ana's key does not check either.
    let bobs: String = redis::AsyncCommands::get(&mut conn, "t:sk-counter:bob:SHA256:k")
        .await
        .expect("get");
    let () = redis::AsyncCommands::set(&mut conn, key, &bobs)
        .await
        .expect("set");
    assert_eq!(
        a.raise_sk_counter("ana", "SHA256:k", 16).await.expect("a"),
        None
    );
    // Another seal key's value is refused too.
    let stranger = fleet(dir.path(), 9, None).await;
    assert_eq!(
        stranger
            .raise_sk_counter("ana", "SHA256:k", 17)
            .await
            .expect("s"),
        None
    );
    // Every key expires: Redis keeps none forever.
    let ttl: i64 = redis::AsyncCommands::ttl(&mut conn, key)
        .await
        .expect("ttl");
    assert!(ttl > 0, "{ttl}");
}

/// Issue 28: a user's graces, shared by hosts; one edited, moved to
/// another user or written without the seal key is refused.
#[tokio::test]
async fn graces_are_shared_and_a_forged_or_moved_one_is_refused() {
    use crate::totp::Grace;
    let dir = tempfile::tempdir().expect("tempdir");
    let _redis = server(dir.path());
    let one = fleet(dir.path(), 1, None).await;
    let other = fleet(dir.path(), 1, None).await;
    let grace = Grace {
        fingerprint: "SHA256:abc".into(),
        source: "203.0.113.7".parse().expect("ip"),
        began: 1000,
        until: 2800,
        step: 33,
        conn: 4,
        certificate: false,
    };
    one.begin_grace("ana", &grace, &[]).await.expect("begin");
    assert_eq!(
        other.load_graces("ana").await.expect("load"),
        std::slice::from_ref(&grace)
    );
    assert!(other.load_graces("bob").await.expect("load").is_empty());

    let mut conn = one.connection().expect("conn");
    let slot = grace.slot();
    let stored: String = redis::AsyncCommands::hget(&mut conn, "t:grace:ana", &slot)
        .await
        .expect("hget");
    // Moved to bob, as is: its MAC names ana.
    let _: () = redis::AsyncCommands::hset(&mut conn, "t:grace:bob", &slot, &stored)
        .await
        .expect("hset");
    assert!(other.load_graces("bob").await.expect("load").is_empty());
    // Lengthened in place: the MAC no longer checks.
    let longer = stored.replace("\"until\":2800", "\"until\":99800");
    assert_ne!(longer, stored);
    let _: () = redis::AsyncCommands::hset(&mut conn, "t:grace:ana", &slot, &longer)
        .await
        .expect("hset");
    assert!(other.load_graces("ana").await.expect("load").is_empty());
    // Signed under another seal key: refused too.
    let stranger = fleet(dir.path(), 9, None).await;
    stranger
        .begin_grace("ana", &grace, &[])
        .await
        .expect("begin");
    assert!(other.load_graces("ana").await.expect("load").is_empty());

    one.begin_grace("ana", &grace, &[]).await.expect("begin");
    assert_eq!(one.end_graces("ana").await.expect("end"), 1);
    assert!(other.load_graces("ana").await.expect("load").is_empty());
}
