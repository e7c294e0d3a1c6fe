//! The jump host's defences end to end, with the real OpenSSH client, raw
//! TCP sockets and ssh-audit against `gatehouse run`: failures counted into
//! bans that close a source before any SSH byte, bans stored across a
//! restart and lifted live with `gatehouse bans lift`, doubling repeat bans,
//! `login_grace`, `idle_timeout`, `max_channels`, `per_ip_connections` and
//! `trusted`, the pre-auth cap under a flood from one address, and
//! offboarding of live sessions (and of a login half done) when a user or
//! key leaves the config.
//!
//! A second source address is another loopback address (127.0.0.2: Linux
//! routes all of 127.0.0.0/8 to lo), so a flood or a ban from 127.0.0.1
//! can be told apart from a legitimate client. No test asserts how long
//! anything took; the harness only bounds how long it waits.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, TcpStream},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::{
    enroll::wrong_code,
    jump::{code_at, config, field, loopback, tunnel},
    util::{
        Gatehouse, Hello, Output, PATIENCE, SshClient, TcpServer, Terminal, eventually, gatehouse,
        hello, read_hello, run, tool,
    },
};

/// What gatehouse says first to a client it lets in.
const IDENT: &str = "SSH-2.0-gatehouse\r\n";

/// The other loopback source address.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

pub(crate) fn identification() -> Hello {
    Hello::Identification(IDENT.to_owned())
}

/// `yaml` with `jump.limits` set to the flow mapping body `limits`.
pub(crate) fn with_limits(yaml: &str, limits: &str) -> String {
    let with = yaml.replacen(
        "  users:\n",
        &format!("  limits: {{ {limits} }}\n  users:\n"),
        1,
    );
    assert_ne!(with, yaml, "no `users:` in {yaml}");
    with
}

/// User `sean` (the returned client's key) in group `dev`, which may reach
/// 127.0.0.1:`port`, with `limits`; the client knows the jump host as `jump`.
pub(crate) fn jump_host(mfa: &str, limits: &str, port: u16) -> (Gatehouse, SshClient) {
    let mut client = SshClient::new();
    let g = Gatehouse::start(&with_limits(
        &config(
            mfa,
            &[("sean", &client, &["dev"])],
            &[("dev", vec![format!("127.0.0.0/8:{port}")])],
        ),
        limits,
    ));
    client.add_host("jump", g.jump(), "sean");
    (g, client)
}

/// A client with a key nobody configured, pointed at the jump host as `sean`.
fn stranger(g: &Gatehouse) -> SshClient {
    let mut stranger = SshClient::new();
    stranger.add_host("jump", g.jump(), "sean");
    stranger
}

/// The `n`th connection gatehouse let in (0-based), as its `conn` number.
fn nth_conn(g: &Gatehouse, n: usize) -> Value {
    g.audit_nth(n, "connection_opened", |_| true)["conn"].clone()
}

/// The audit events `event` of connection `conn` so far.
fn of_conn(g: &Gatehouse, event: &str, conn: &Value) -> Vec<Value> {
    g.audits(event)
        .into_iter()
        .filter(|v| v["conn"] == *conn)
        .collect()
}

/// Wait until connection `conn` ends; its `connection_closed` event. Failures
/// are counted before it is logged, so they are all in the log by then.
pub(crate) fn closed(g: &Gatehouse, conn: &Value) -> Value {
    g.audit("connection_closed", |v| v["conn"] == *conn)
}

/// The one failure counted on connection `conn` (it must have ended).
fn the_failure(g: &Gatehouse, conn: &Value) -> Value {
    closed(g, conn);
    let failures = of_conn(g, "failure", conn);
    assert_eq!(
        failures.len(),
        1,
        "one failure per connection: {failures:?}"
    );
    failures.into_iter().next().expect("one failure")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn state_dir(g: &Gatehouse) -> PathBuf {
    g.dir.path().join("state")
}

/// `gatehouse bans ARGS --config FILE`: exit code and stdout.
fn bans(g: &Gatehouse, args: &[&str]) -> (Option<i32>, String) {
    let config = g.config.to_str().expect("UTF-8 config path");
    let mut all = vec!["bans"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    let out = gatehouse(&all, g.dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.stderr.is_empty(),
        "gatehouse {all:?} wrote to stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), stdout)
}

/// The shape of a `ban` audit event for 127.0.0.1: its count, and a length
/// of `seconds` (whole seconds: the clock may tick between the two
/// readings, so one less is fine too).
fn assert_ban(ban: &Value, count: u64, seconds: u64) {
    assert_eq!(ban["source"], "127.0.0.1", "{ban}");
    assert_eq!(ban["count"], count, "{ban}");
    let got = ban["seconds"].as_u64().expect("seconds");
    assert!(got == seconds || got + 1 == seconds, "{ban}");
    let until = ban["until"].as_u64().expect("until");
    assert!(until + 1 >= unix_now(), "{ban}");
}

/// What OpenSSH says when the server closes before its identification
/// line: "closed", or "reset" when ssh's own identification line was
/// already in the socket, unread, when gatehouse closed it.
fn closed_before_ssh(out: &Output, g: &Gatehouse) {
    out.failure().stderr_has("kex_exchange_identification");
    let port = g.jump().port();
    assert!(
        out.stderr
            .contains(&format!("Connection closed by 127.0.0.1 port {port}"))
            || out
                .stderr
                .contains(&format!("Connection reset by 127.0.0.1 port {port}")),
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn failures_count_once_per_connection_and_a_ban_closes_the_source_before_any_ssh_byte() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host(
        "required",
        "max_auth_attempts: 2, ban: { after: 3, within: 10m, for: 10m, max: 1h }",
        echo.port(),
    );
    let secret = g.enroll("sean");
    let stranger = stranger(&g);
    let more_keys = [SshClient::new(), SshClient::new()];

    // An unknown key: one failure, when the connection ends unauthenticated.
    let unknown = tunnel(&stranger, &to, b"x");
    unknown
        .failure()
        .stderr_has("Permission denied (publickey).");
    let conn = nth_conn(&g, 0);
    let failure = the_failure(&g, &conn);
    assert_eq!(
        failure["reason"], "no successful authentication",
        "{failure}"
    );
    assert!(
        field(&failure, "peer").starts_with("127.0.0.1:"),
        "{failure}"
    );

    // Three unknown keys against max_auth_attempts 2: cut off before the
    // last, and still one failure for the connection, not one per key.
    let mut cmd = stranger.ssh();
    for other in &more_keys {
        cmd.arg("-i").arg(&other.key);
    }
    let many = run(cmd.args(["-W", &to, "jump"]), b"x");
    many.failure()
        .stderr_has("Too many authentication attempts");
    let conn = nth_conn(&g, 1);
    let failure = the_failure(&g, &conn);
    assert_eq!(
        failure["reason"], "no successful authentication",
        "{failure}"
    );
    let tried = of_conn(&g, "auth", &conn);
    assert!(!tried.is_empty() && tried.len() < 3, "{tried:?}");
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));

    // A wrong code: counted at once, and not again when the connection ends.
    client.answer_with(&wrong_code(&secret));
    let wrong = tunnel(&client, &to, b"x");
    wrong
        .failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("Permission denied");
    let conn = nth_conn(&g, 2);
    let rejected = g.audit("auth", |v| v["conn"] == conn && v["result"] == "rejected");
    assert_eq!(rejected["method"], "keyboard-interactive", "{rejected}");
    assert_eq!(rejected["detail"], "wrong code", "{rejected}");
    let failure = the_failure(&g, &conn);
    assert_eq!(failure["reason"], "wrong code", "{failure}");
    assert_eq!(failure["user"], "sean", "{failure}");
    assert_eq!(g.audits("failure").len(), 3);

    // The third failure within ten minutes bans 127.0.0.1 for ten minutes.
    let ban = g.audit("ban", |_| true);
    assert_ban(&ban, 1, 600);
    assert_eq!(g.audits("ban").len(), 1);

    // Banned: the TCP connection is accepted and closed with not one byte
    // sent, so no key exchange, and gatehouse does not even log it.
    let opened = g.audits("connection_opened").len();
    assert_eq!(hello(g.jump(), None), Hello::Closed);
    client.answer_with_totp(&secret);
    let shut_out = tunnel(&client, &to, b"x");
    closed_before_ssh(&shut_out, &g);
    assert_eq!(client.prompts().len(), 1, "{:?}", client.prompts());
    assert_eq!(g.audits("connection_opened").len(), opened);

    // Another source is not affected.
    assert_eq!(hello(g.jump(), Some(OTHER)), identification());
    let other = g.audit_nth(opened, "connection_opened", |_| true);
    assert!(field(&other, "peer").starts_with("127.0.0.2:"), "{other}");
}

#[test]
fn a_ban_is_stored_survives_a_restart_and_an_operator_lifts_it_live() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (mut g, mut client) = jump_host(
        "optional",
        "ban: { after: 1, within: 10m, for: 10m, max: 1h }",
        echo.port(),
    );
    let stranger = stranger(&g);
    tunnel(&stranger, &to, b"x")
        .failure()
        .stderr_has("Permission denied (publickey).");
    let ban = g.audit("ban", |_| true);
    assert_ban(&ban, 1, 600);

    // Stored in state_dir/bans.json, readable by its owner only (written
    // by the ban writer task, a moment after the ban takes effect).
    let file = state_dir(&g).join("bans.json");
    eventually("bans.json written", || file.exists());
    let mode = std::fs::metadata(&file)
        .expect("bans.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read bans.json"))
            .expect("bans.json is JSON");
    let stored = stored.as_array().expect("a list of bans");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["source"], "127.0.0.1", "{stored:?}");
    assert_eq!(stored[0]["count"], 1, "{stored:?}");
    assert_eq!(stored[0]["until"], ban["until"], "{stored:?}");

    // The operator's view.
    let (code, listed) = bans(&g, &[]);
    assert_eq!(code, Some(0), "{listed}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(lines[0].starts_with("127.0.0.1  until "), "{listed}");
    assert!(lines[0].contains(" left, ban #1)"), "{listed}");

    // A restart does not lift it.
    g.restart();
    client.add_host("jump", g.jump(), "sean");
    assert_eq!(hello(g.jump(), None), Hello::Closed);
    closed_before_ssh(&tunnel(&client, &to, b"x"), &g);
    assert!(g.audits("connection_opened").is_empty());

    // `gatehouse bans lift`: the running server notices the file change.
    let (code, lifted) = bans(&g, &["lift", "127.0.0.1"]);
    assert_eq!(code, Some(0), "{lifted}");
    assert_eq!(
        lifted,
        "127.0.0.1: ban lifted; a running gatehouse applies it within 2 seconds\n"
    );
    let event = g.audit("ban_lifted", |_| true);
    assert_eq!(event["source"], "127.0.0.1", "{event}");
    assert_eq!(hello(g.jump(), None), identification());
    let back = tunnel(&client, &to, b"back in\n");
    back.success();
    assert_eq!(back.stdout(), "back in\n", "{back}");

    // Lifting what is not banned says so, with exit code 3.
    let (code, again) = bans(&g, &["lift", "127.0.0.1"]);
    assert_eq!((code, again.as_str()), (Some(3), "127.0.0.1: not banned\n"));
    let (code, listed) = bans(&g, &[]);
    assert_eq!((code, listed.as_str()), (Some(0), "no bans in force\n"));
}

#[test]
fn repeat_bans_double_up_to_the_maximum() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, _client) = jump_host(
        "optional",
        "ban: { after: 1, within: 1m, for: 1s, max: 4s }",
        echo.port(),
    );
    let stranger = stranger(&g);
    // 1 s, doubled to 2 s and 4 s, then held at the 4 s maximum.
    for (round, seconds) in [(1_u64, 1_u64), (2, 2), (3, 4), (4, 4)] {
        tunnel(&stranger, &to, b"x")
            .failure()
            .stderr_has("Permission denied (publickey).");
        let ban = g.audit_nth(usize::try_from(round - 1).expect("small"), "ban", |_| true);
        assert_ban(&ban, round, seconds);
        // When it runs out, the address is let in again.
        eventually(&format!("ban #{round} over"), || {
            hello(g.jump(), None) == identification()
        });
    }
    assert_eq!(g.audits("ban").len(), 4);
}

#[test]
fn login_grace_ends_silent_and_stalled_logins_and_counts_them_as_failures() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host(
        "required",
        "login_grace: 2s, ban: { after: 2, within: 10m, for: 10m, max: 1h }",
        echo.port(),
    );
    let secret = g.enroll("sean");

    // A TCP client that reads the identification line and says nothing.
    let mut silent = TcpStream::connect(g.jump()).expect("connect");
    assert_eq!(read_hello(&mut silent), identification());
    let local = silent.local_addr().expect("local addr").to_string();
    let mut rest = Vec::new();
    silent
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    silent
        .read_to_end(&mut rest)
        .expect("gatehouse closes the connection");
    let opened = g.audit("connection_opened", |v| v["peer"] == local.as_str());
    let conn = opened["conn"].clone();
    let gone = closed(&g, &conn);
    assert!(
        field(&gone, "reason").starts_with("login_grace expired"),
        "{gone}"
    );
    let failure = the_failure(&g, &conn);
    assert_eq!(failure["reason"], "login_grace expired", "{failure}");
    assert!(g.audits("ban").is_empty());

    // A real client whose user walked away from the code prompt.
    client.answer_after(Duration::from_secs(6), &code_at(&secret, "now"));
    let stalled = tunnel(&client, &to, b"x");
    stalled
        .failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.");
    assert!(stalled.stdout.is_empty(), "{stalled}");
    assert_eq!(client.prompts().len(), 1, "{:?}", client.prompts());
    let conn = nth_conn(&g, 1);
    let gone = closed(&g, &conn);
    assert_eq!(
        gone["reason"], "login_grace expired before authentication",
        "{gone}"
    );
    let failure = the_failure(&g, &conn);
    assert_eq!(failure["reason"], "login_grace expired", "{failure}");
    assert!(g.audits("tunnel_opened").is_empty());
    assert!(
        g.audits("auth").iter().all(|v| v["result"] != "accepted"),
        "{:?}",
        g.audits("auth")
    );

    // Two failures: banned.
    assert_ban(&g.audit("ban", |_| true), 1, 600);
    assert_eq!(hello(g.jump(), None), Hello::Closed);
}

/// Send `line` (and a newline) through an echo tunnel and see it come back.
pub(crate) fn ping(t: &mut Terminal, line: &str) {
    let line = format!("{line}\n");
    t.send(line.as_bytes());
    t.expect(&line);
}

#[test]
fn idle_timeout_cuts_a_quiet_connection_while_traffic_keeps_another_alive() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("optional", "idle_timeout: 3s", echo.port());

    let quiet = client.master(&[]);
    let quiet_conn = nth_conn(&g, 0);
    // A tunnel of its own, with a little traffic five times a second.
    let mut busy = Terminal::start(client.ssh().args(["-W", &to, "jump"]));
    ping(&mut busy, "ping 0");
    let busy_conn = nth_conn(&g, 1);
    assert_ne!(busy_conn, quiet_conn);
    // Busy for at least twice idle_timeout, and until the quiet one is cut.
    let mut n = 1;
    while n < 30 || of_conn(&g, "connection_closed", &quiet_conn).is_empty() {
        assert!(n < 300, "the quiet connection was never cut");
        std::thread::sleep(Duration::from_millis(200));
        ping(&mut busy, &format!("ping {n}"));
        n += 1;
    }
    let gone = closed(&g, &quiet_conn);
    assert!(
        field(&gone, "reason").starts_with("idle_timeout: no channel traffic for "),
        "{gone}"
    );
    assert_eq!(gone["user"], "sean", "{gone}");
    let quiet = quiet.finish();
    quiet.failure().stderr_has("idle timeout");
    client.check_master().failure();

    // The busy one lives on, and ends when its client is done.
    assert!(of_conn(&g, "connection_closed", &busy_conn).is_empty());
    ping(&mut busy, "still here");
    busy.close_stdin();
    let busy = busy.finish();
    busy.success();
    let gone = closed(&g, &busy_conn);
    assert!(
        !field(&gone, "reason").starts_with("idle_timeout"),
        "{gone}"
    );
}

#[test]
fn max_channels_refuses_a_third_tunnel_and_the_first_two_keep_working() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("optional", "max_channels: 2", echo.port());
    let master = client.master(&[]);

    let mut one = Terminal::start(&mut client.via_master(&to));
    ping(&mut one, "one");
    let mut two = Terminal::start(&mut client.via_master(&to));
    ping(&mut two, "two");

    // The mux client hears only "refused"; the master says why.
    let third = run(&mut client.via_master(&to), b"three\n");
    third
        .failure()
        .stderr_has("Stdio forwarding request failed: Session open refused by peer");
    assert!(third.stdout.is_empty(), "{third}");
    eventually("the master reports the refusal", || {
        master.stderr().contains("open failed: resource shortage")
    });
    let refused = g.audit("tunnel_refused", |_| true);
    assert_eq!(refused["reason"], "max_channels reached", "{refused}");
    assert_eq!(refused["via"], "direct-tcpip", "{refused}");

    ping(&mut one, "one again");
    ping(&mut two, "two again");
    let opened = g.audits("tunnel_opened");
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert_eq!(g.audits("connection_opened").len(), 1, "one SSH connection");
    assert!(
        opened.iter().all(|v| v["conn"] == refused["conn"]),
        "{opened:?} {refused}"
    );

    // Closed tunnels give their channels back.
    for mut t in [one, two] {
        t.close_stdin();
        t.finish().success();
    }
    eventually("both tunnels closed", || {
        g.audits("tunnel_closed").len() == 2
    });
    let mut again = None;
    eventually("a tunnel opens again", || {
        let out = run(&mut client.via_master(&to), b"again\n");
        let ok = out.status.success();
        again = Some(out);
        ok
    });
    let again = again.expect("ran");
    assert_eq!(again.stdout(), "again\n", "{again}");
}

/// A config where each user may use the keys of `clients` and reach
/// 127.0.0.1:`port`.
fn users_config(users: &[(&str, &[&SshClient])], port: u16) -> String {
    let mut yaml =
        "state_dir: state\nlog: { format: json }\njump:\n  listen: [\"127.0.0.1:0\"]\n  \
                    mfa: optional\n  users:\n"
            .to_owned();
    for (name, clients) in users {
        let keys: Vec<String> = clients
            .iter()
            .map(|c| format!("\"{}\"", c.public_key()))
            .collect();
        yaml.push_str(&format!(
            "    {name}: {{ keys: [{}], groups: [dev] }}\n",
            keys.join(", ")
        ));
    }
    yaml.push_str(&format!(
        "  groups:\n    dev: {{ allow: [\"127.0.0.0/8:{port}\"] }}\n"
    ));
    yaml
}

/// A live `ssh -W` echo tunnel, proven to work; its connection number.
pub(crate) fn live_tunnel(g: &Gatehouse, client: &SshClient, to: &str) -> (Terminal, Value) {
    let mut t = Terminal::start(client.ssh().args(["-W", to, "jump"]));
    ping(&mut t, "hello");
    let fp = client.fingerprint();
    let accepted = g.audit("auth", |v| {
        v["result"] == "accepted" && v["fingerprint"] == fp.as_str()
    });
    (t, accepted["conn"].clone())
}

/// The tunnel's client was cut off by the server.
pub(crate) fn cut_off(t: Terminal) {
    let out = t.finish();
    out.failure().stderr_has("access revoked");
}

#[test]
fn removing_a_user_or_a_key_cuts_their_live_sessions_and_only_theirs() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let port = echo.port();
    let mut sean = SshClient::new();
    let mut kim = SshClient::new();
    let mut kim_laptop = SshClient::new();
    let g = Gatehouse::start(&users_config(
        &[("sean", &[&sean]), ("kim", &[&kim, &kim_laptop])],
        port,
    ));
    sean.add_host("jump", g.jump(), "sean");
    kim.add_host("jump", g.jump(), "kim");
    kim_laptop.add_host("jump", g.jump(), "kim");
    let (sean_t, sean_conn) = live_tunnel(&g, &sean, &to);
    let (kim_t, kim_conn) = live_tunnel(&g, &kim, &to);
    let (mut laptop_t, laptop_conn) = live_tunnel(&g, &kim_laptop, &to);

    // sean leaves the config (rewritten in place).
    g.write_config_in_place(&users_config(&[("kim", &[&kim, &kim_laptop])], port));
    let off = g.audit("offboarded", |_| true);
    assert_eq!(
        (&off["user"], &off["reason"], &off["conn"]),
        (
            &Value::from("sean"),
            &Value::from("user removed from the configuration"),
            &sean_conn
        ),
        "{off}"
    );
    let gone = closed(&g, &sean_conn);
    assert!(field(&gone, "reason").starts_with("offboarded"), "{gone}");
    assert_eq!(gone["user"], "sean", "{gone}");
    cut_off(sean_t);
    tunnel(&sean, &to, b"x")
        .failure()
        .stderr_has("Permission denied (publickey).");

    // kim's first key leaves the config (replaced by rename): the session
    // on it is cut, the one on her other key stays.
    let mut kim_t = kim_t;
    ping(&mut kim_t, "kim still here");
    g.replace_config(&users_config(&[("kim", &[&kim_laptop])], port));
    let off = g.audit("offboarded", |v| v["user"] == "kim");
    assert_eq!(off["reason"], "key removed from the configuration", "{off}");
    assert_eq!(off["conn"], kim_conn, "{off}");
    let gone = closed(&g, &kim_conn);
    assert!(field(&gone, "reason").starts_with("offboarded"), "{gone}");
    cut_off(kim_t);

    ping(&mut laptop_t, "laptop still here");
    assert!(of_conn(&g, "connection_closed", &laptop_conn).is_empty());
    assert_eq!(
        g.audits("offboarded").len(),
        2,
        "{:?}",
        g.audits("offboarded")
    );
    laptop_t.close_stdin();
    laptop_t.finish().success();
}

#[test]
fn a_key_removed_while_its_owner_types_the_code_does_not_get_in() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let port = echo.port();
    let mut laptop = SshClient::new();
    let desktop = SshClient::new();
    let g = Gatehouse::start(&users_config(&[("sean", &[&laptop, &desktop])], port));
    laptop.add_host("jump", g.jump(), "sean");
    let secret = g.enroll("sean");
    let go = laptop.dir().join("go");
    laptop.answer_with_totp_when(&secret, &go);

    std::thread::scope(|s| {
        let login = s.spawn(|| tunnel(&laptop, &to, b"x\n"));
        // The key is verified and the code asked for; then the laptop's
        // key leaves the config, and only then the (right) code comes.
        eventually("the code prompt", || laptop.prompts().len() == 1);
        g.write_config_in_place(&users_config(&[("sean", &[&desktop])], port));
        g.wait_for(|v| v["event"] == "reload" && v["result"] == "ok");
        std::fs::write(&go, "").expect("write go");
        let out = login.join().expect("login thread");
        out.failure().stderr_has("Permission denied");
        assert!(out.stdout.is_empty(), "{out}");
    });
    let conn = nth_conn(&g, 0);
    let refused = g.audit("auth", |v| {
        v["conn"] == conn && v["method"] == "keyboard-interactive"
    });
    assert_eq!(refused["result"], "rejected", "{refused}");
    assert_eq!(
        refused["detail"], "key or user removed from the configuration",
        "{refused}"
    );
    let gone = closed(&g, &conn);
    assert!(gone["user"].is_null(), "{gone}");
    assert!(
        g.audits("auth").iter().all(|v| v["result"] != "accepted"),
        "{:?}",
        g.audits("auth")
    );
    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn per_ip_connections_turns_away_a_quick_fourth_connection_unless_trusted() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let limits = "per_ip_connections: 3/min, ban: { after: 1, within: 10m, for: 10m, max: 1h }";
    let (g, client) = jump_host("optional", limits, echo.port());
    let stranger = stranger(&g);

    for _ in 0..3 {
        assert_eq!(hello(g.jump(), None), identification());
    }
    assert_eq!(hello(g.jump(), None), Hello::Closed);
    closed_before_ssh(&tunnel(&client, &to, b"x"), &g);
    // Per source: another address still gets in.
    assert_eq!(hello(g.jump(), Some(OTHER)), identification());
    // Turned away at the gate is not a failure.
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));

    // Trusted sources are never rate-limited, nor banned.
    let yaml = std::fs::read_to_string(&g.config).expect("read config");
    g.write_config_in_place(&yaml.replacen(
        limits,
        &format!("{limits}, trusted: [\"127.0.0.0/8\"]"),
        1,
    ));
    g.wait_for(|v| v["event"] == "reload" && v["result"] == "ok");
    eventually("the new limits apply", || {
        hello(g.jump(), None) == identification()
    });
    for _ in 0..10 {
        assert_eq!(hello(g.jump(), None), identification());
    }
    let opened = g.audits("connection_opened").len();
    tunnel(&stranger, &to, b"x")
        .failure()
        .stderr_has("Permission denied (publickey).");
    closed(&g, &nth_conn(&g, opened));
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));
    let ok = tunnel(&client, &to, b"trusted\n");
    ok.success();
    assert_eq!(ok.stdout(), "trusted\n", "{ok}");
}

/// Has the server closed `stream`? (Non-blocking; reads and drops whatever came.)
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0_u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn a_half_open_flood_from_one_address_does_not_keep_another_from_logging_in() {
    // At most this many flood connections in all, at most HELD at a time.
    const BUDGET: usize = 400;
    const HELD: usize = 50;
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    // No help from the rate limiter: only the pre-auth cap and each
    // source's share of it (a quarter: 2) stand between flood and login.
    let (g, client) = jump_host(
        "optional",
        "login_grace: 2s, max_unauthenticated: 8, per_ip_connections: 1000/s",
        echo.port(),
    );
    let jump = g.jump();

    // 50 connections from 127.0.0.1 that never say a word: two get a
    // pre-auth slot, the rest are closed without an identification line.
    let mut held: Vec<TcpStream> = (0..HELD)
        .map(|_| TcpStream::connect_timeout(&jump, PATIENCE).expect("flood connect"))
        .collect();
    let answers: Vec<Hello> = held.iter_mut().map(read_hello).collect();
    let admitted = answers.iter().filter(|a| **a == identification()).count();
    let turned = answers.iter().filter(|a| **a == Hello::Closed).count();
    assert_eq!((admitted, turned), (2, HELD - 2), "{answers:?}");

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Keep the flood up: reopen what the server closes (up to BUDGET),
        // and let a few dribble garbage, a byte at a time.
        let flood = s.spawn(|| {
            let mut opened = held.len();
            for c in &held {
                c.set_nonblocking(true).expect("nonblocking");
            }
            while !stop.load(Ordering::Acquire) {
                held.retain_mut(|c| !is_closed(c));
                // One more every tick: the budget lasts a few login_graces.
                if held.len() < HELD
                    && opened < BUDGET
                    && let Ok(c) = TcpStream::connect_timeout(&jump, PATIENCE)
                {
                    c.set_nonblocking(true).expect("nonblocking");
                    held.push(c);
                    opened += 1;
                }
                for c in held.iter_mut().take(5) {
                    let _ = c.write_all(b"x");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            opened
        });

        // The flood outlasts login_grace: its slots are taken back...
        let expired = g.audit("failure", |v| {
            v["reason"] == "login_grace expired" && field(v, "peer").starts_with("127.0.0.1:")
        });
        assert!(field(&closed(&g, &expired["conn"]), "reason").starts_with("login_grace expired"));
        // ...and a login from another address goes through meanwhile.
        let login = run(
            client.ssh().args(["-b", "127.0.0.2", "-W", &to, "jump"]),
            b"through the flood\n",
        );
        stop.store(true, Ordering::Release);
        let opened = flood.join().expect("flood thread");
        login.success();
        assert_eq!(login.stdout(), "through the flood\n", "{login}");
        assert!(opened > HELD, "the flood went on: {opened} connections");
        eprintln!("flood: {opened} connections");
    });
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(accepted["user"], "sean", "{accepted}");
    assert!(
        field(&accepted, "peer").starts_with("127.0.0.2:"),
        "{accepted}"
    );
    g.audit("tunnel_closed", |v| v["conn"] == accepted["conn"]);
}

#[test]
fn ssh_audit_finds_nothing_to_fail_and_only_the_post_quantum_note_to_warn() {
    // Default limits, as shipped.
    let (g, _client) = crate::jump::one_user("required", vec!["127.0.0.0/8:22".to_owned()]);
    let out = run(
        tool("ssh-audit").env("NO_COLOR", "1").args([
            "-n",
            "-p",
            &g.jump().port().to_string(),
            "127.0.0.1",
        ]),
        b"",
    );
    let text = out.stdout();
    // ssh-audit's exit codes: 0 good, 2 warnings, 3 failures.
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(!text.contains("[fail]"), "{out}");
    // Columns squeezed: ssh-audit pads names to the longest one.
    let squeezed = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let warnings: Vec<String> = text
        .lines()
        .filter(|l| l.contains("[warn]"))
        .map(squeezed)
        .collect();
    assert_eq!(
        warnings,
        [
            "(kex) curve25519-sha256 -- [warn] does not provide protection against post-quantum attacks",
            "(kex) curve25519-sha256@libssh.org -- [warn] does not provide protection against post-quantum attacks",
        ],
        "{out}"
    );
    // The key exchanges in the order offered: the two hybrids first
    // (ML-KEM for OpenSSH 9.9+, sntrup761 for 8.5–9.8 under both names).
    let kex: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("(kex) "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        kex,
        [
            "mlkem768x25519-sha256",
            "sntrup761x25519-sha512",
            "sntrup761x25519-sha512@openssh.com",
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "ext-info-s",
            "kex-strict-s-v00@openssh.com",
        ],
        "{out}"
    );
    // The DHEat probe (many connections a second from one source) found the
    // per-source throttling: no warning about it.
    for absent in ["DHEat", "throttling", "(cve)", "(rec)"] {
        assert!(!text.contains(absent), "{absent}: {out}");
    }
    for present in [
        "(gen) banner: SSH-2.0-gatehouse",
        "(gen) compression: disabled",
        "(kex) mlkem768x25519-sha256 ",
        "(kex) kex-strict-s-v00@openssh.com ",
        "(key) ssh-ed25519 ",
        "(enc) chacha20-poly1305@openssh.com ",
        "(mac) hmac-sha2-512-etm@openssh.com ",
    ] {
        assert!(text.contains(present), "{present}: {out}");
    }
    let keys: Vec<&str> = text.lines().filter(|l| l.starts_with("(key) ")).collect();
    assert_eq!(keys.len(), 1, "{out}");
    let macs: Vec<&str> = text.lines().filter(|l| l.starts_with("(mac) ")).collect();
    assert!(macs.iter().all(|l| l.contains("-etm@")), "{out}");

    // The scan is no attack: nothing counted, nothing banned.
    assert!(g.audits("failure").is_empty(), "{:?}", g.audits("failure"));
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));
    eprintln!("ssh-audit said:\n{text}");
}

/// Debian 12's OpenSSH 9.2 (like every OpenSSH from 8.5 to 9.8) puts
/// sntrup761x25519 first and knows no ML-KEM: it gets the hybrid by
/// default, and each name forced works, as does curve25519 for clients
/// without a hybrid; the tunnel's bytes prove the keys agree both ways.
#[test]
fn openssh_9_2_gets_sntrup761x25519_by_default_and_with_each_name() {
    let echo = TcpServer::echo();
    let to = format!("127.0.0.1:{}", echo.port());
    let (g, client) = crate::jump::one_user("optional", vec![to.clone()]);
    for (forced, negotiated) in [
        (None, "sntrup761x25519-sha512"),
        (
            Some("sntrup761x25519-sha512@openssh.com"),
            "sntrup761x25519-sha512@openssh.com",
        ),
        (Some("sntrup761x25519-sha512"), "sntrup761x25519-sha512"),
        (Some("curve25519-sha256"), "curve25519-sha256"),
    ] {
        let mut ssh = client.ssh();
        ssh.arg("-v");
        if let Some(kex) = forced {
            ssh.args(["-o", &format!("KexAlgorithms={kex}")]);
        }
        let out = run(ssh.args(["-W", &to, "jump"]), b"post-quantum\n");
        out.success();
        assert_eq!(out.stdout(), "post-quantum\n", "{out}");
        let line = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("debug1: kex: algorithm: "))
            .unwrap_or_else(|| panic!("no kex line: {out}"));
        assert_eq!(line, negotiated, "forced {forced:?}: {out}");
    }
    assert_eq!(g.audits("tunnel_closed").len(), 4);
}
