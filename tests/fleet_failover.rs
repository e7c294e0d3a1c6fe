//! Redis Sentinel (issue 24 part 3), with the real engines: a primary, a
//! replica and three `redis-sentinel` processes on loopback. A host finds
//! the primary through the Sentinels and follows a failover (the primary
//! killed with SIGKILL while logins run); a TOTP step Redis lost is still
//! refused by the host that saw it used (its replay floor); the same
//! through a TLS-only set (`sentinel.tls`); the Redis ACL docs/fleet.md
//! recommends is all a fleet needs.

use std::time::{Duration, Instant};

use crate::{
    fleet::{Fleet, code_details, fleet_of, fleet_with, unknown_key_from},
    fleet_trust::{bans, enroll},
    jump::code_at,
    util::{Gatehouse, Sentinels, SshClient, eventually, run, tool},
};

/// `ssh -W` through `alias` with what the askpass answers: whether it got
/// through, and how long the whole login took.
fn through(f: &Fleet, alias: &str) -> (bool, Duration) {
    let started = Instant::now();
    let out = f.client.echo_via(alias, &f.echo);
    let ok = out.status.success() && out.stdout() == "hello\n";
    (ok, started.elapsed())
}

/// The YAML with users `u0`..: copies of `sean` (same key, same
/// provisioned secret), so that each login in a loop is a user's first
/// in this step.
fn with_users(yaml: String, n: usize) -> String {
    let start = yaml.find("    sean:\n").expect("sean in the YAML");
    let end = yaml.find("    ana:\n").expect("ana in the YAML");
    let copies: String = (0..n)
        .map(|i| yaml[start..end].replacen("    sean:", &format!("    u{i}:"), 1))
        .collect();
    format!("{}{copies}{}", &yaml[..end], &yaml[end..])
}

/// Logins as `u0`, `u1`, ... through the first host, each answering the
/// current code.
struct Logins {
    next: usize,
    users: usize,
}

impl Logins {
    fn new(f: &mut Fleet, users: usize) -> Logins {
        let jump = f.hosts[0].jump();
        for i in 0..users {
            f.client.add_host(&format!("u{i}"), jump, &format!("u{i}"));
        }
        Logins { next: 0, users }
    }

    fn one(&mut self, f: &Fleet) -> (bool, Duration) {
        assert!(self.next < self.users, "all {} users logged in", self.users);
        let alias = format!("u{}", self.next);
        self.next += 1;
        f.client.answer_with_totp(&f.secret);
        through(f, &alias)
    }
}

/// The YAML with `set`'s `sentinel:` (and `ca_file:`) instead of `url:`.
fn through_sentinels(yaml: String, set: &Sentinels) -> String {
    let at = yaml.find("    url: ").expect("url in the YAML");
    let end = at + yaml[at..].find('\n').expect("end of line") + 1;
    format!("{}    {}\n{}", &yaml[..at], set.yaml(), &yaml[end..])
}

fn p50(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() / 2]
}

#[test]
fn codes_redis_lost_are_still_refused_by_the_host_that_saw_them_used() {
    let mut f = fleet_with(1, "closed", "\"127.0.0.0/8\"", |y| with_users(y, 9));
    // Login time with one Redis (no Sentinel): the comparison below.
    let mut logins = Logins::new(&mut f, 9);
    let took: Vec<Duration> = (0..9)
        .map(|_| {
            let (ok, took) = logins.one(&f);
            assert!(ok, "a login failed");
            took
        })
        .collect();
    eprintln!("login p50 with one Redis: {:?} (9 logins)", p50(took));

    // ana enrolls in the fleet's Redis and uses a code.
    let (secret, recovery) = enroll(&f.hosts[0], "ana");
    let code = code_at(&secret, "now");
    f.client.answer_with(&code);
    assert!(through(&f, "ana1").0, "ana's first login failed");
    // What a failover that lost the claim leaves: no used step in Redis.
    assert_eq!(f.redis.cli(&["DEL", "test:totp-step:ana"]).trim(), "1");
    // The same code on the same host: refused, as a replay.
    assert!(
        !through(&f, "ana1").0,
        "a code Redis forgot was taken again"
    );
    let details = code_details(&f.hosts[0]);
    assert!(
        details.last().is_some_and(|d| d.contains("replay")),
        "{details:?}"
    );
    // Redis alone would have taken it: the step was not there.
    assert_eq!(
        f.redis.cli(&["EXISTS", "test:totp-step:ana"]).trim(),
        "0",
        "the refusal came from Redis, not from the host's floor"
    );

    // A recovery code: used, then put back in Redis as it was (what a
    // failover that lost its removal leaves), then refused on this host.
    let members = |f: &Fleet| -> Vec<String> {
        let mut all: Vec<String> = f
            .redis
            .cli(&["SMEMBERS", "test:recovery:ana"])
            .lines()
            .map(str::to_owned)
            .collect();
        all.sort();
        all
    };
    let before = members(&f);
    f.client.answer_with(&recovery[0]);
    assert!(through(&f, "ana1").0, "ana's recovery code failed");
    let after = members(&f);
    let gone: Vec<&String> = before.iter().filter(|m| !after.contains(m)).collect();
    assert_eq!(gone.len(), 1, "{before:?} -> {after:?}");
    f.redis.cli(&["SADD", "test:recovery:ana", gone[0]]);
    assert_eq!(members(&f), before);
    assert!(
        !through(&f, "ana1").0,
        "a recovery code Redis got back was taken again"
    );
    let last = code_details(&f.hosts[0]);
    assert!(
        last.last().is_some_and(|d| d.starts_with("\"rejected\"")),
        "{last:?}"
    );
    // Redis alone would have taken it: it is there.
    assert_eq!(members(&f), before, "the member was removed this time");
}

#[test]
fn logins_resume_after_the_primary_is_killed_and_a_used_code_stays_used() {
    const USERS: usize = 120;
    let mut set = Sentinels::start();
    let mut f = fleet_with(1, "closed", "\"127.0.0.0/8\"", |yaml| {
        through_sentinels(with_users(yaml, USERS), &set)
    });
    let mut logins = Logins::new(&mut f, USERS);
    // ana's enrollment: in the primary, replicated.
    let (ana, _) = enroll(&f.hosts[0], "ana");

    // Before: every login works.
    let before: Vec<Duration> = (0..9)
        .map(|_| {
            let (ok, took) = logins.one(&f);
            assert!(ok, "a login failed before the kill");
            took
        })
        .collect();
    // ana's code, used just before the kill.
    let code = code_at(&ana, "now");
    f.client.answer_with(&code);
    assert!(through(&f, "ana1").0, "ana's login before the kill failed");

    // Each claim waited for the replica (`WAIT 1 100`): 9 + ana's.
    let stats = set.primary_cli(&["INFO", "commandstats"]);
    let waits: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no WAIT in {stats}"));
    assert_eq!(waits, 10, "{stats}");

    set.kill_primary();
    let killed = Instant::now();
    // Refused (fail closed) until the Sentinels promote the replica and
    // the host asks them again; bounded by the users left, not a clock.
    let mut refused = 0;
    let gap = loop {
        if logins.one(&f).0 {
            break killed.elapsed();
        }
        refused += 1;
    };
    // After: every login works again.
    for _ in 0..5 {
        assert!(logins.one(&f).0, "a login failed after the promotion");
    }
    set.await_promotion();
    // The new primary has no replica: claims stop waiting, said once.
    let logged = f.hosts[0].lines().join("\n");
    assert_eq!(
        logged
            .matches("no replica held a claimed TOTP step")
            .count(),
        1,
        "{logged}"
    );

    // ana's code again: refused as a replay, on the new primary's host.
    f.client.answer_with(&code);
    assert!(
        !through(&f, "ana1").0,
        "a code used before the failover was taken after it"
    );
    let details = code_details(&f.hosts[0]);
    assert!(
        details.last().is_some_and(|d| d.contains("replay")),
        "{details:?}"
    );
    // Nothing else failed: every other refusal was the outage.
    let failures: Vec<&String> = details
        .iter()
        .filter(|d| !d.starts_with("\"accepted\""))
        .collect();
    assert_eq!(failures.len(), refused + 1, "{details:?}");
    assert!(
        failures[..refused]
            .iter()
            .all(|d| d.contains("not checked: store unreachable")),
        "{failures:?}"
    );
    eprintln!(
        "failover: first login through {gap:?} after the kill, {refused} logins refused \
         meanwhile; login p50 with Sentinel before the kill: {:?} (9 logins); replica {} \
         promoted",
        p50(before),
        set.replica
    );
}

#[test]
fn through_tls_sentinels_a_code_works_once_and_logins_resume_after_a_failover() {
    const USERS: usize = 120;
    // TLS only: no process of the set has a plain TCP port.
    let mut set = Sentinels::start_with(true);
    let config = std::cell::OnceCell::new();
    let mut f = fleet_with(2, "closed", "\"127.0.0.0/8\"", |yaml| {
        config
            .get_or_init(|| through_sentinels(with_users(yaml, USERS), &set))
            .clone()
    });
    let config = config.into_inner().expect("the fleet's YAML");
    // Without the set's CA, the system's roots do not trust the Sentinels:
    // that host fails closed.
    let ca_line = config
        .lines()
        .find(|l| l.starts_with("    ca_file: "))
        .expect("ca_file in the YAML");
    assert!(config.contains("tls: true }"), "{config}");
    let stranger = Gatehouse::start(&config.replace(&format!("{ca_line}\n"), ""));
    f.client.add_host("stranger", stranger.jump(), "sean");
    // sean's code: taken on one host, refused as a replay on the other
    // (what refuses it is the fleet's state, reached through TLS).
    let code = code_at(&f.secret, "now");
    f.client.answer_with(&code);
    assert!(through(&f, "jump1").0, "sean's login through TLS failed");
    assert!(!through(&f, "jump2").0, "sean's code was taken twice");
    let details = code_details(&f.hosts[1]);
    assert!(
        details.last().is_some_and(|d| d.contains("replay")),
        "{details:?}"
    );
    // The claim is in the primary (asked over TLS, as the hosts do).
    let step = set.primary_cli(&["EXISTS", "test:totp-step:sean"]);
    assert_eq!(step.trim(), "1", "no claimed step in the primary");
    assert!(!through(&f, "stranger").0, "a host without the CA let in");
    let closed = stranger.audit("auth", |v| v["result"] == "rejected");
    assert!(
        closed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unreachable")),
        "{closed}"
    );
    // Its connect loop logs why (it may still be trying when the login comes).
    eventually("the stranger logs the certificate refusal", || {
        stranger.lines().join("\n").contains("UnknownIssuer")
    });

    // A failover, through TLS: the Sentinels name the replica's TLS port.
    let mut logins = Logins::new(&mut f, USERS);
    assert!(logins.one(&f).0, "a login failed before the kill");
    set.kill_primary();
    let killed = Instant::now();
    let mut refused = 0;
    while !logins.one(&f).0 {
        refused += 1;
    }
    let gap = killed.elapsed();
    for _ in 0..3 {
        assert!(logins.one(&f).0, "a login failed after the promotion");
    }
    set.await_promotion();
    // sean's code again, on the new primary: still refused.
    f.client.answer_with(&code);
    assert!(
        !through(&f, "jump1").0,
        "a code used before the failover was taken after it"
    );
    let details = code_details(&f.hosts[0]);
    assert!(
        details.last().is_some_and(|d| d.contains("replay")),
        "{details:?}"
    );
    eprintln!(
        "TLS failover: first login through {gap:?} after the kill, {refused} logins refused \
         meanwhile; replica {} promoted",
        set.replica
    );
}

/// The Redis ACL docs/fleet.md recommends, for key prefix `test:`: the keys
/// and channel under the prefix, the commands gatehouse uses, no other.
pub(crate) const ACL: &[&str] = &[
    "resetkeys",
    "~test:*",
    "resetchannels",
    "&test:*",
    "-@all",
    "+get",
    "+set",
    "+del",
    "+exists",
    "+type",
    "+hget",
    "+hmget",
    "+hset",
    "+hdel",
    "+hscan",
    "+hgetall",
    "+hlen",
    "+expire",
    "+multi",
    "+exec",
    "+sadd",
    "+srem",
    "+smembers",
    "+eval",
    "+evalsha",
    "+script|load",
    "+publish",
    "+subscribe",
    "+wait",
    "+role",
    "+ping",
];

#[test]
fn the_recommended_acl_is_all_gatehouse_needs() {
    let f = fleet_of(2, "closed", "");
    let port = f.redis.addr.port().to_string();
    let admin = |args: &[&str]| {
        let out = run(
            tool("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port])
                .args(["--user", "admin", "--pass", "admin", "--no-auth-warning"])
                .args(args),
            b"",
        );
        out.success();
        out.stdout()
    };
    // An admin for the test, then the hosts' user (`default`) limited.
    f.redis.cli(&[
        "ACL", "SETUSER", "admin", "on", ">admin", "~*", "&*", "+@all",
    ]);
    let set = admin(&[&["ACL", "SETUSER", "default"][..], ACL].concat());
    assert_eq!(set.trim(), "OK");
    assert!(
        f.redis.cli(&["SET", "other:x", "1"]).contains("NOPERM"),
        "a key outside the prefix was writable"
    );
    assert_eq!(admin(&["ACL", "LOG", "RESET"]).trim(), "OK");

    // Everything a fleet does: enrollment, a login, a replay refused, a
    // wrong code counted, failures and a ban shared, a lift, a reset.
    let g = &f.hosts[0];
    let (secret, _) = enroll(g, "ana");
    let code = code_at(&secret, "now");
    f.client.answer_with(&code);
    assert!(through(&f, "ana1").0, "ana's login failed");
    assert!(!through(&f, "ana2").0, "ana's code was taken twice");
    f.client.answer_with("000000");
    assert!(!through(&f, "ana1").0);
    let details = code_details(&f.hosts[1]);
    assert!(details.iter().any(|d| d.contains("replay")), "{details:?}");
    let mut stranger = SshClient::new();
    stranger.add_host("x", g.jump(), "sean");
    for _ in 0..5 {
        unknown_key_from(&f, &stranger, "127.0.0.77", "jump1");
    }
    g.audit("ban", |v| v["source"] == "127.0.0.77");
    f.hosts[1].audit("ban_adopted", |v| v["source"] == "127.0.0.77");
    let (status, text) = bans(&f.hosts[1], &["lift", "127.0.0.77"]);
    assert_eq!(status, Some(0), "{text}");
    assert!(g.totp("reset", "ana").status.success());

    // Nothing was denied.
    assert_eq!(admin(&["ACL", "LOG"]).trim(), "", "denied by the ACL");
    // The replay and the wrong code, counted in Redis.
    let wrong = admin(&["GET", "test:wrong-codes:ana"]);
    assert!(wrong.starts_with("2:"), "{wrong}");
}
