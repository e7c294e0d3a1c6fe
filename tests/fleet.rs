//! A fleet: several gatehouse processes sharing one real redis-server
//! (`state.redis`). A code works once across the fleet, the per-user
//! wrong-code limit counts on every host, and a Redis outage makes TOTP
//! logins fail closed (or go local, as configured) until it is back.

use std::{os::unix::fs::PermissionsExt, path::Path};

use crate::{
    jump::code_at,
    util::{Gatehouse, Hello, Redis, SshClient, TcpServer, eventually, hello, run},
};

/// The same YAML for every host: `sean` with a provisioned secret in
/// `secret_file`, `trusted` (YAML list items) never banned, the fleet's
/// state in `redis`.
pub(crate) fn fleet_yaml(
    client: &SshClient,
    secret_file: &Path,
    redis: &Redis,
    on_outage: &str,
    echo: u16,
    trusted: &str,
) -> String {
    format!(
        "state_dir: state\nlog: {{ format: json }}\n\
         state:\n  redis:\n    url: \"{}\"\n    key_prefix: \"test:\"\n    on_outage: {on_outage}\n\
         \x20   seal_key_file: \"{}\"\n\
         admin:\n  listen: 127.0.0.1:0\n\
         jump:\n  listen: [\"127.0.0.1:0\"]\n  mfa: required\n\
         \x20 limits: {{ trusted: [{trusted}] }}\n\
         \x20 users:\n    sean:\n      keys: [\"{}\"]\n      groups: [dev]\n      totp_secret_file: \"{}\"\n\
         \x20   ana:\n      keys: [\"{}\"]\n      groups: [dev]\n\
         \x20 groups:\n    dev: {{ allow: [\"127.0.0.0/8:{echo}\"] }}\n",
        redis.url(),
        seal_key(client.dir()).display(),
        client.public_key(),
        secret_file.display(),
        client.public_key(),
    )
}

/// The fleet's seal key (64 hex digits), mode 0600, in `dir`.
pub(crate) fn seal_key(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("seal.key");
    std::fs::write(&path, format!("{}\n", "5e".repeat(32))).expect("write seal key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A provisioned TOTP secret (base32), mode 0600, in `dir`.
pub(crate) fn secret_file(dir: &Path) -> (std::path::PathBuf, String) {
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned();
    let path = dir.join("sean.totp");
    std::fs::write(&path, format!("{secret}\n")).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (path, secret)
}

/// Two hosts on one Redis, the client knowing them as `jump1`/`jump2`.
pub(crate) struct Fleet {
    pub(crate) hosts: Vec<Gatehouse>,
    pub(crate) client: SshClient,
    pub(crate) echo: TcpServer,
    pub(crate) secret: String,
    pub(crate) redis: Redis,
}

fn fleet(on_outage: &str) -> Fleet {
    // Loopback trusted: these tests send wrong codes on purpose.
    fleet_of(2, on_outage, "\"127.0.0.0/8\"")
}

/// `n` hosts, `trusted` the CIDRs (YAML list items) never banned.
pub(crate) fn fleet_of(n: usize, on_outage: &str, trusted: &str) -> Fleet {
    fleet_with(n, on_outage, trusted, |yaml| yaml)
}

/// [`fleet_of`], its YAML changed by `edit` (given the client's key).
pub(crate) fn fleet_with(
    n: usize,
    on_outage: &str,
    trusted: &str,
    edit: impl Fn(String) -> String,
) -> Fleet {
    let echo = TcpServer::echo();
    let redis = Redis::start();
    let mut client = SshClient::new();
    let (file, secret) = secret_file(client.dir());
    let yaml = edit(fleet_yaml(
        &client,
        &file,
        &redis,
        on_outage,
        echo.port(),
        trusted,
    ));
    let hosts: Vec<Gatehouse> = (0..n).map(|_| Gatehouse::start(&yaml)).collect();
    for (i, g) in hosts.iter().enumerate() {
        client.add_host(&format!("jump{}", i + 1), g.jump(), "sean");
        // ana: no provisioned secret, so she enrolls (in Redis).
        client.add_host(&format!("ana{}", i + 1), g.jump(), "ana");
        // bob: only in the YAML of tests that add him.
        client.add_host(&format!("bob{}", i + 1), g.jump(), "bob");
    }
    // Both hosts connected to Redis before the first login.
    for g in &hosts {
        eventually("the host reports Redis up", || {
            healthz(g).contains("state: redis up")
        });
    }
    Fleet {
        hosts,
        client,
        echo,
        secret,
        redis,
    }
}

fn healthz(g: &Gatehouse) -> String {
    g.admin_get("healthz")
}

/// The `detail` of host `g`'s keyboard-interactive audit lines.
pub(crate) fn code_details(g: &Gatehouse) -> Vec<String> {
    g.audits("auth")
        .into_iter()
        .filter(|v| v["method"] == "keyboard-interactive")
        .map(|v| format!("{}: {}", v["result"], v["detail"]))
        .collect()
}

#[test]
fn a_code_used_through_one_host_is_refused_by_another() {
    let f = fleet("closed");
    let code = code_at(&f.secret, "now");
    f.client.answer_with(&code);
    let first = f.client.echo_via("jump1", &f.echo);
    first.success();
    assert_eq!(first.stdout(), "hello\n", "{first}");
    // The same code through the other host: used already, fleet-wide.
    f.client.echo_via("jump2", &f.echo).failure();
    let on_two = code_details(&f.hosts[1]);
    assert_eq!(on_two.len(), 1, "{on_two:?}");
    assert!(
        on_two[0].contains("code already used (replay)"),
        "{on_two:?}"
    );
    // The step is in Redis, signed: `STEP:MAC` (issue 24).
    let stored = f.redis.cli(&["GET", "test:totp-step:sean"]);
    let (step, mac) = stored.trim().split_once(':').expect("STEP:MAC");
    assert!(step.parse::<u64>().is_ok() && mac.len() == 64, "{stored}");
}

#[test]
fn the_per_user_code_limit_counts_across_hosts() {
    let f = fleet("closed");
    f.client.answer_with("000000");
    f.client.echo_via("jump1", &f.echo).failure();
    f.client.echo_via("jump2", &f.echo).failure();
    f.client.echo_via("jump1", &f.echo).failure();
    // Three wrong codes on two hosts: the next code is not even checked,
    // on either host, though it is right.
    f.client.answer_with(&code_at(&f.secret, "now"));
    f.client.echo_via("jump2", &f.echo).failure();
    let on_two = code_details(&f.hosts[1]);
    assert!(
        on_two
            .last()
            .is_some_and(|d| d.contains("per-user code limit")),
        "{on_two:?}"
    );
}

#[test]
fn with_redis_down_codes_fail_closed_and_logins_return_with_it() {
    // Loopback not trusted: an outage must not count against clients.
    let mut f = fleet_of(2, "closed", "");
    f.redis.stop();
    f.client.answer_with_totp(&f.secret);
    f.client.echo_via("jump1", &f.echo).failure();
    let on_one = code_details(&f.hosts[0]);
    assert!(
        on_one
            .last()
            .is_some_and(|d| d.contains("the fleet's Redis is unreachable")),
        "{on_one:?}"
    );
    // Not the client's fault: nothing counted toward a ban. A failure is
    // logged when its connection closes: read once the close is logged.
    let refused = f.hosts[0].audit("auth", |v| v["result"] == "rejected");
    f.hosts[0].audit("connection_closed", |v| v["conn"] == refused["conn"]);
    assert!(
        f.hosts[0].audits("failure").is_empty(),
        "{:?}",
        f.hosts[0].audits("failure")
    );
    eventually("healthz says so", || {
        healthz(&f.hosts[0]).contains("state: redis unreachable")
    });

    // Redis back, empty (it kept nothing): logins work again.
    f.redis.restart();
    eventually("a login through jump1 works again", || {
        f.client.echo_via("jump1", &f.echo).status.success()
    });
    eventually("healthz says redis is up", || {
        healthz(&f.hosts[0]).contains("state: redis up")
    });
}

#[test]
fn with_on_outage_local_codes_are_checked_by_each_host_alone() {
    let mut f = fleet("local");
    f.redis.stop();
    f.client.answer_with(&code_at(&f.secret, "now"));
    let out = f.client.echo_via("jump1", &f.echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    // Each host still refuses a replay of its own...
    f.client.echo_via("jump1", &f.echo).failure();
    let on_one = code_details(&f.hosts[0]);
    assert!(
        on_one
            .last()
            .is_some_and(|d| d.contains("code already used (replay)")),
        "{on_one:?}"
    );
    let logged = f.hosts[0].lines().join("\n");
    assert!(logged.contains("on_outage: local"), "{logged}");
    // ...but cannot know what another host took: the same code is good once
    // on host 2, checked there alone.
    let out = f.client.echo_via("jump2", &f.echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    let on_two = code_details(&f.hosts[1]);
    assert!(
        on_two.len() == 1 && on_two[0].starts_with("\"accepted\": \"totp step "),
        "{on_two:?}"
    );
}

/// `ssh -b FROM` to `host` with a key no host knows: one failure there.
pub(crate) fn unknown_key_from(f: &Fleet, stranger: &SshClient, from: &str, host: &str) {
    let to = format!("127.0.0.1:{}", f.echo.port());
    let index = host
        .trim_start_matches("jump")
        .parse::<usize>()
        .expect("jumpN")
        - 1;
    let port = f.hosts[index].jump().port().to_string();
    let out = run(
        stranger.ssh().args([
            "-b",
            from,
            "-p",
            &port,
            "-W",
            &to,
            "-l",
            "sean",
            "127.0.0.1",
        ]),
        b"",
    );
    out.failure();
}

#[test]
fn a_source_banned_through_one_host_is_shut_out_by_every_host() {
    let f = fleet_of(3, "closed", "");
    let mut stranger = SshClient::new();
    stranger.add_host("x", f.hosts[0].jump(), "sean");
    for _ in 0..5 {
        unknown_key_from(&f, &stranger, "127.0.0.71", "jump1");
    }
    let ban = f.hosts[0].audit("ban", |_| true);
    assert_eq!(ban["source"], "127.0.0.71", "{ban}");
    // Hosts 2 and 3 take it from Redis and close the source before SSH.
    for g in &f.hosts[1..] {
        let adopted = g.audit("ban_adopted", |v| v["source"] == "127.0.0.71");
        assert_eq!(adopted["prefix"], 32, "{adopted}");
        eprintln!(
            "banned at {}, adopted by another host at {}",
            ban["timestamp"], adopted["timestamp"]
        );
        assert_eq!(
            hello(g.jump(), Some("127.0.0.71".parse().expect("ip"))),
            Hello::Closed
        );
    }
    // Nobody else is affected.
    f.client.answer_with(&code_at(&f.secret, "now"));
    f.client.echo_via("jump3", &f.echo).success();
}

#[test]
fn failures_spread_over_hosts_add_up_to_one_ban() {
    let f = fleet_of(3, "closed", "");
    let mut stranger = SshClient::new();
    stranger.add_host("x", f.hosts[0].jump(), "sean");
    // 2 + 2 + 1 failures: no host saw 5, the fleet did.
    for host in ["jump1", "jump2", "jump1", "jump2", "jump3"] {
        unknown_key_from(&f, &stranger, "127.0.0.72", host);
    }
    let ban = f.hosts[2].audit("ban", |v| v["source"] == "127.0.0.72");
    assert_eq!(ban["count"], 1, "{ban}");
    for g in &f.hosts[..2] {
        g.audit("ban_adopted", |v| v["source"] == "127.0.0.72");
    }
}

#[test]
fn a_host_started_after_a_ban_takes_it_from_redis() {
    let f = fleet_of(1, "closed", "");
    let mut stranger = SshClient::new();
    stranger.add_host("x", f.hosts[0].jump(), "sean");
    for _ in 0..5 {
        unknown_key_from(&f, &stranger, "127.0.0.73", "jump1");
    }
    f.hosts[0].audit("ban", |_| true);
    let (file, _) = secret_file(f.client.dir());
    let late = Gatehouse::start(&fleet_yaml(
        &f.client,
        &file,
        &f.redis,
        "closed",
        f.echo.port(),
        "",
    ));
    late.audit("ban_adopted", |v| v["source"] == "127.0.0.73");
    assert_eq!(
        hello(late.jump(), Some("127.0.0.73".parse().expect("ip"))),
        Hello::Closed
    );
}

/// `gatehouse totp ACTION ana` against host `g`'s config: the output.
fn totp_cli(g: &Gatehouse, action: &str) -> (bool, String) {
    let out = g.totp(action, "ana");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn an_enrollment_made_through_one_host_is_sealed_in_redis_and_good_on_another() {
    let f = fleet_of(2, "closed", "");
    let secret = f.hosts[0].enroll("ana");
    // The secret is in Redis, sealed: neither its base32 nor its bytes.
    let stored = f
        .redis
        .cli(&["--no-raw", "HGET", "test:enrollment:ana", "sealed"]);
    assert!(!stored.is_empty() && !stored.contains(&secret), "{stored}");
    let raw = gatehouse_config::parse_totp_secret(&secret).expect("base32");
    let dump = f.redis.cli(&["--no-raw", "DUMP", "test:enrollment:ana"]);
    assert!(
        !dump
            .as_bytes()
            .windows(raw.len())
            .any(|w| w == raw.as_slice()),
        "plain secret in Redis"
    );
    let (ok, status) = totp_cli(&f.hosts[1], "status");
    assert!(ok, "{status}");
    assert!(
        status.contains("secret sealed in the fleet's Redis"),
        "{status}"
    );
    // Host 2 never saw the enrollment, yet takes ana's code.
    f.client.answer_with(&code_at(&secret, "now"));
    let to = format!("127.0.0.1:{}", f.echo.port());
    let out = run(f.client.ssh().args(["-W", &to, "ana2"]), b"hello\n");
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
}

#[test]
fn two_enrollments_at_once_on_two_hosts_have_one_winner() {
    let f = fleet_of(2, "closed", "");
    let (one, two) = std::thread::scope(|s| {
        let one = s.spawn(|| totp_cli(&f.hosts[0], "enroll"));
        let two = s.spawn(|| totp_cli(&f.hosts[1], "enroll"));
        (one.join().expect("one"), two.join().expect("two"))
    });
    assert!(
        one.0 != two.0,
        "exactly one wins:\n{}\n---\n{}",
        one.1,
        two.1
    );
    let loser = if one.0 { &two.1 } else { &one.1 };
    assert!(loser.contains("already enrolled"), "{loser}");
}

#[test]
fn totp_reset_on_one_host_cuts_sessions_on_another_and_applies_everywhere() {
    let f = fleet_of(2, "closed", "");
    let secret = f.hosts[0].enroll("ana");
    f.client.answer_with(&code_at(&secret, "now"));
    let to = format!("127.0.0.1:{}", f.echo.port());
    let mut live = crate::util::Terminal::start(f.client.ssh().args(["-W", &to, "ana1"]));
    live.send(b"ping\n");
    live.expect("ping\n");
    let conn =
        f.hosts[0].audit("auth", |v| v["user"] == "ana" && v["result"] == "accepted")["conn"]
            .clone();

    let (ok, text) = totp_cli(&f.hosts[1], "reset");
    assert!(ok, "{text}");
    let off = f.hosts[0].audit("offboarded", |v| v["conn"] == conn);
    assert_eq!(off["reason"], "TOTP enrollment reset", "{off}");
    live.finish().failure();
    // Not enrolled anywhere now.
    let (ok, status) = totp_cli(&f.hosts[0], "status");
    assert!(!ok && status.contains("not enrolled"), "{status}");
}

#[test]
fn rolling_the_seal_key_reseals_enrollments_as_they_are_read() {
    let f = fleet_of(1, "closed", "");
    let secret = f.hosts[0].enroll("ana");
    let before = f
        .redis
        .cli(&["--no-raw", "HGET", "test:enrollment:ana", "sealed"]);
    // A host with a new key, the old one listed as previous.
    let new_key = f.client.dir().join("seal-2.key");
    std::fs::write(&new_key, format!("{}\n", "a7".repeat(32))).expect("write key");
    std::fs::set_permissions(&new_key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (file, _) = secret_file(f.client.dir());
    let yaml = fleet_yaml(&f.client, &file, &f.redis, "closed", f.echo.port(), "");
    let old_line = format!(
        "    seal_key_file: \"{}\"\n",
        seal_key(f.client.dir()).display()
    );
    assert!(yaml.contains(&old_line), "{yaml}");
    let rolled = yaml.replace(
        &old_line,
        &format!(
            "    seal_key_file: \"{}\"\n    previous_seal_key_files: [\"{}\"]\n",
            new_key.display(),
            seal_key(f.client.dir()).display()
        ),
    );
    let g = Gatehouse::start(&rolled);
    f.client.answer_with(&code_at(&secret, "now"));
    let to = format!("127.0.0.1:{}", f.echo.port());
    let mut alias = f.client.ssh();
    alias.args([
        "-p",
        &g.jump().port().to_string(),
        "-l",
        "ana",
        "-W",
        &to,
        "127.0.0.1",
    ]);
    let out = run(&mut alias, b"hello\n");
    out.success();
    // Read once, sealed again with the new key: the old key may go.
    let after = f
        .redis
        .cli(&["--no-raw", "HGET", "test:enrollment:ana", "sealed"]);
    assert_ne!(before, after);
    let only_new = rolled.replace(
        &format!(
            "    previous_seal_key_files: [\"{}\"]\n",
            seal_key(f.client.dir()).display()
        ),
        "",
    );
    let newest = Gatehouse::start(&only_new);
    let status = newest.totp("status", "ana");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn a_user_enrolling_over_ssh_through_one_host_logs_in_through_another() {
    let mut f = fleet_of(3, "closed", "");
    // ana's terminal login (`ssh -tt jump`) lands on host 1.
    f.client.add_host("jump", f.hosts[0].jump(), "ana");
    let mut t = crate::enroll::terminal(&f.client);
    let screen = crate::enroll::enrollment_screen(&mut t);
    // The confirming code is the one for the step of this unix time.
    let confirmed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let confirming = code_at(&screen.secret, &format!("@{confirmed}"));
    t.type_line(&confirming);
    t.expect("Enrolled.");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(0), "{out}");
    f.hosts[0].audit("totp", |v| v["user"] == "ana" && v["action"] == "enrolled");
    // The confirming code is used up on every host: host 2 refuses it.
    let to = format!("127.0.0.1:{}", f.echo.port());
    f.client.answer_with(&confirming);
    run(f.client.ssh().args(["-W", &to, "ana2"]), b"hello\n").failure();
    let replay = f.hosts[1].audit("auth", |v| v["user"] == "ana" && v["result"] == "rejected");
    assert!(
        replay["detail"]
            .as_str()
            .is_some_and(|d| d.contains("replay")),
        "{replay}"
    );
    // A later step's code logs in on host 3, which never saw the screen:
    // the next step, or the current one if the clock has moved past it
    // (within the skew either way), tried once.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let step = (confirmed / 30 + 1).max(now / 30);
    f.client
        .answer_with(&code_at(&screen.secret, &format!("@{}", step * 30)));
    let out = run(f.client.ssh().args(["-W", &to, "ana3"]), b"hello\n");
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    let on_three = code_details(&f.hosts[2]);
    assert_eq!(on_three, [format!("\"accepted\": \"totp step {step}\"")]);
}

#[test]
fn over_tls_with_the_fleets_ca_codes_work_once_and_a_wrong_ca_fails_closed() {
    let echo = TcpServer::echo();
    let redis = Redis::start_tls();
    let mut client = SshClient::new();
    let (file, secret) = secret_file(client.dir());
    let ca = redis.ca.clone().expect("a TLS redis");
    let plain = fleet_yaml(&client, &file, &redis, "closed", echo.port(), "");
    assert!(plain.contains("rediss://"), "{plain}");
    let with_ca = plain.replace(
        "    on_outage: closed\n",
        &format!("    on_outage: closed\n    ca_file: \"{}\"\n", ca.display()),
    );
    let g1 = Gatehouse::start(&with_ca);
    let g2 = Gatehouse::start(&with_ca);
    // Without the fleet's CA, the system's roots do not trust Redis.
    let stranger = Gatehouse::start(&plain);
    for g in [&g1, &g2] {
        eventually("up over TLS", || healthz(g).contains("state: redis up"));
    }
    client.add_host("jump1", g1.jump(), "sean");
    client.add_host("jump2", g2.jump(), "sean");
    client.add_host("jump3", stranger.jump(), "sean");
    client.answer_with(&code_at(&secret, "now"));
    let to = format!("127.0.0.1:{}", echo.port());
    let first = run(client.ssh().args(["-W", &to, "jump1"]), b"hello\n");
    first.success();
    run(client.ssh().args(["-W", &to, "jump2"]), b"hello\n").failure();
    let replay = g2.audit("auth", |v| v["result"] == "rejected");
    assert!(
        replay["detail"]
            .as_str()
            .is_some_and(|d| d.contains("replay")),
        "{replay}"
    );
    run(client.ssh().args(["-W", &to, "jump3"]), b"hello\n").failure();
    let closed = stranger.audit("auth", |v| v["result"] == "rejected");
    assert!(
        closed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unreachable")),
        "{closed}"
    );
}
