//! The SSH jump host end to end: the real OpenSSH client (`ssh -W`, `-J`,
//! the `nc` ProxyCommand, ControlMaster, sftp) against `gatehouse run`,
//! with a throwaway sshd as the host behind the jump. Every test checks
//! what the client saw *and* the audit events gatehouse logged.
//!
//! A TOTP code's time step is accepted once per user, so each enrolled user
//! logs in with a code at most once per test; tests about tunnels rather
//! than codes use `mfa: optional` and users without an enrollment.

use std::net::SocketAddr;

use gatehouse_jump::{AuditEvent, AuthResult, Method};
use serde_json::Value;

use crate::util::{Daemon, Gatehouse, Output, SshClient, Sshd, TcpServer, eventually, run, tool};

/// A gatehouse config: `users` as (name, client whose key they use, groups),
/// `groups` as (name, grants).
pub(crate) fn config(
    mfa: &str,
    users: &[(&str, &SshClient, &[&str])],
    groups: &[(&str, Vec<String>)],
) -> String {
    let mut yaml = format!(
        "state_dir: state\nlog: {{ format: json }}\njump:\n  listen: [\"127.0.0.1:0\"]\n  mfa: {mfa}\n  users:\n"
    );
    for (name, client, member_of) in users {
        yaml.push_str(&format!(
            "    {name}: {{ keys: [\"{}\"], groups: [{}] }}\n",
            client.public_key(),
            member_of.join(", ")
        ));
    }
    yaml.push_str("  groups:\n");
    for (name, grants) in groups {
        let grants: Vec<String> = grants.iter().map(|g| format!("\"{g}\"")).collect();
        yaml.push_str(&format!(
            "    {name}: {{ allow: [{}] }}\n",
            grants.join(", ")
        ));
    }
    yaml
}

/// One user `sean` in group `dev` with `grants`; the client is pointed at
/// the running jump host as the alias `jump`.
pub(crate) fn one_user(mfa: &str, grants: Vec<String>) -> (Gatehouse, SshClient) {
    let mut client = SshClient::new();
    let g = Gatehouse::start(&config(
        mfa,
        &[("sean", &client, &["dev"])],
        &[("dev", grants)],
    ));
    client.add_host("jump", g.jump(), "sean");
    (g, client)
}

/// A real second hop behind a jump host: `sean` (mfa `mfa`) in group `dev`,
/// which may reach `sshd`'s port only; `client` knows `jump` and `target`.
/// Enrolling and answering codes are the caller's.
pub(crate) fn jump_to_sshd(mfa: &str, client: &mut SshClient, sshd: &Sshd) -> Gatehouse {
    let g = Gatehouse::start(&config(
        mfa,
        &[("sean", client, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", sshd.addr.port())])],
    ));
    client.add_host("jump", g.jump(), "sean");
    client.add_host("target", sshd.addr, &sshd.user);
    g
}

/// `ssh -W HOST:PORT jump` with `input` on stdin.
pub(crate) fn tunnel(client: &SshClient, to: &str, input: &[u8]) -> Output {
    run(client.ssh().args(["-W", to, "jump"]), input)
}

/// The code for `secret` at `when` (an `oathtool -N` date such as `now`),
/// computed once: a fixed answer, to replay.
pub(crate) fn code_at(secret: &str, when: &str) -> String {
    let out = run(
        tool("oathtool").args(["--totp", "-b", secret, "-N", when]),
        b"",
    );
    out.success();
    out.stdout().trim().to_owned()
}

pub(crate) fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name} in {v}"))
}

pub(crate) fn loopback(port: u16) -> String {
    SocketAddr::from(([127, 0, 0, 1], port)).to_string()
}

fn the_jump_host_line(g: &Gatehouse) -> String {
    format!(
        "gatehouse is a jump host: use ssh -J sean@{} TARGET",
        g.jump()
    )
}

#[test]
fn key_then_code_logs_in_and_a_tunnel_round_trips() {
    let echo = TcpServer::echo();
    let (g, client) = one_user("required", vec![format!("127.0.0.0/8:{}", echo.port())]);
    let secret = g.enroll("sean");
    client.answer_with_totp(&secret);

    let out = tunnel(&client, &loopback(echo.port()), b"hello through the jump\n");
    out.success()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("using \"keyboard-interactive\"");
    assert_eq!(out.stdout(), "hello through the jump\n", "{out}");
    let prompts = client.prompts();
    assert_eq!(prompts.len(), 1, "{prompts:?}");
    assert!(prompts[0].ends_with("Verification code: "), "{prompts:?}");

    let fp = client.fingerprint();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let partial = g.audit("auth", |v| v["result"] == "partial");
    assert_eq!(
        (
            field(&partial, "user"),
            field(&partial, "method"),
            field(&partial, "fingerprint")
        ),
        ("sean", "publickey", fp.as_str()),
        "{partial}"
    );
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(
        (
            field(&accepted, "user"),
            field(&accepted, "method"),
            field(&accepted, "fingerprint")
        ),
        ("sean", "keyboard-interactive", fp.as_str()),
        "{accepted}"
    );
    assert!(
        field(&accepted, "detail").starts_with("totp step "),
        "{accepted}"
    );

    let opened = g.audit("tunnel_opened", |_| true);
    assert_eq!(opened["via"], "direct-tcpip", "{opened}");
    assert_eq!(opened["user"], "sean", "{opened}");
    assert_eq!(opened["host"], "127.0.0.1", "{opened}");
    assert_eq!(opened["port"], echo.port(), "{opened}");
    assert_eq!(opened["dialled"], loopback(echo.port()), "{opened}");
    assert_eq!(opened["group"], "dev", "{opened}");
    assert_eq!(
        opened["grant"],
        format!("127.0.0.0/8:{}", echo.port()),
        "{opened}"
    );
    assert_eq!(opened["conn"], accepted["conn"], "{opened}");

    let closed = g.audit("tunnel_closed", |_| true);
    assert_eq!(closed["bytes_up"], 23, "{closed}");
    assert_eq!(closed["bytes_down"], 23, "{closed}");
    assert_eq!(closed["dialled"], loopback(echo.port()), "{closed}");
    assert!(closed["duration_ms"].is_u64(), "{closed}");
    assert_eq!(closed["reason"], "eof", "{closed}");
    let gone = g.audit("connection_closed", |_| true);
    assert_eq!(gone["user"], "sean", "{gone}");
}

#[test]
fn a_wrong_code_is_refused() {
    let echo = TcpServer::echo();
    let (g, client) = one_user("required", vec![format!("127.0.0.0/8:{}", echo.port())]);
    let secret = g.enroll("sean");
    // 000000 is the current code once in a million steps.
    assert_ne!(code_at(&secret, "now"), "000000");
    client.answer_with("000000");

    let out = tunnel(&client, &loopback(echo.port()), b"x");
    out.failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("Permission denied");
    assert!(out.stdout.is_empty(), "{out}");
    // The schema's own types, as a log consumer would read the line.
    let (method, detail) = g.audit_typed(|e| match e {
        AuditEvent::Auth {
            method,
            result: AuthResult::Rejected,
            detail,
            ..
        } => Some((*method, detail.clone())),
        _ => None,
    });
    assert_eq!(method, Method::KeyboardInteractive);
    assert_eq!(detail, "wrong code");
    g.audit("connection_closed", |_| true);
    let events = g.audit_events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, AuditEvent::TunnelOpened { .. })),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            AuditEvent::Auth {
                result: AuthResult::Accepted,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn a_code_is_accepted_once_also_across_a_restart() {
    let echo = TcpServer::echo();
    let (mut g, mut client) = one_user("required", vec![format!("127.0.0.0/8:{}", echo.port())]);
    let secret = g.enroll("sean");
    // The next step's code: accepted now (skew 1) and for at least 60 s,
    // so a slow restart cannot turn the replay into a merely expired code.
    let code = code_at(&secret, "+30 seconds");
    client.answer_with(&code);
    let is_replay =
        |v: &Value| v["result"] == "rejected" && v["detail"] == "code already used (replay)";

    let first = tunnel(&client, &loopback(echo.port()), b"first\n");
    first.success();
    assert_eq!(first.stdout(), "first\n", "{first}");
    g.audit("auth", |v| v["result"] == "accepted");

    let second = tunnel(&client, &loopback(echo.port()), b"second\n");
    second.failure().stderr_has("Permission denied");
    g.audit("auth", is_replay);
    assert_eq!(g.audits("tunnel_opened").len(), 1);

    // The used step is on disk: a restarted server refuses it too.
    g.restart();
    client.add_host("jump", g.jump(), "sean");
    let third = tunnel(&client, &loopback(echo.port()), b"third\n");
    third.failure().stderr_has("Permission denied");
    g.audit("auth", is_replay);
    g.audit("connection_closed", |_| true);
    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn unknown_keys_and_unknown_users_look_the_same() {
    let echo = TcpServer::echo();
    let (g, sean) = one_user("optional", vec![format!("127.0.0.0/8:{}", echo.port())]);
    let mut stranger = SshClient::new();
    stranger.add_host("jump", g.jump(), "sean");

    let wrong_key = tunnel(&stranger, &loopback(echo.port()), b"x");
    wrong_key
        .failure()
        .stderr_has("Permission denied (publickey).");
    let no_such_user = run(
        sean.ssh()
            .args(["-l", "mallory", "-W", &loopback(echo.port()), "jump"]),
        b"x",
    );
    no_such_user
        .failure()
        .stderr_has("Permission denied (publickey).");

    let for_sean = g.audit("auth", |v| v["user"] == "sean");
    let for_mallory = g.audit("auth", |v| v["user"] == "mallory");
    for (event, client) in [(&for_sean, &stranger), (&for_mallory, &sean)] {
        assert_eq!(event["result"], "rejected", "{event}");
        assert_eq!(event["method"], "publickey", "{event}");
        assert_eq!(event["fingerprint"], client.fingerprint(), "{event}");
    }
    // The same words for both: the log does not tell which users exist
    // (and neither does the wire).
    assert_eq!(for_sean["detail"], for_mallory["detail"]);
    eventually("both connections closed", || {
        g.audits("connection_closed").len() == 2
    });
    assert!(
        g.audits("auth").iter().all(|v| v["result"] == "rejected"),
        "{:?}",
        g.audits("auth")
    );
    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn passwords_are_never_offered() {
    let echo = TcpServer::echo();
    let (g, client) = one_user("required", vec![format!("127.0.0.0/8:{}", echo.port())]);
    g.enroll("sean");
    let can_continue = |out: &Output| -> Vec<String> {
        out.stderr
            .lines()
            .filter(|l| l.contains("Authentications that can continue:"))
            .map(str::to_owned)
            .collect()
    };

    // Asking for a password first: the server offers only publickey.
    let password_only = run(
        client.ssh().args([
            "-v",
            "-o",
            "PreferredAuthentications=password",
            "-W",
            &loopback(echo.port()),
            "jump",
        ]),
        b"",
    );
    password_only
        .failure()
        .stderr_has("Authentications that can continue: publickey")
        .stderr_has("Permission denied (publickey).");
    let lines = can_continue(&password_only);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| !l.contains("password")),
        "{password_only}"
    );

    // After the key, only keyboard-interactive (the code), never a password.
    let key_then_password = run(
        client.ssh().args([
            "-v",
            "-o",
            "PreferredAuthentications=publickey,password",
            "-W",
            &loopback(echo.port()),
            "jump",
        ]),
        b"",
    );
    key_then_password
        .failure()
        .stderr_has("partial success")
        .stderr_has("Authentications that can continue: keyboard-interactive");
    let lines = can_continue(&key_then_password);
    assert!(
        lines.iter().all(|l| !l.contains("password")),
        "{key_then_password}"
    );
    assert!(client.prompts().is_empty(), "{:?}", client.prompts());

    eventually("both connections closed", || {
        g.audits("connection_closed").len() == 2
    });
    assert!(
        g.audits("auth").iter().all(|v| v["method"] != "password"),
        "{:?}",
        g.audits("auth")
    );
}

#[test]
fn a_cidr_grant_allows_what_is_dialled_also_by_name() {
    let echo = TcpServer::echo();
    let grant = format!("127.0.0.0/8:{}", echo.port());
    let (g, client) = one_user("optional", vec![grant.clone()]);

    let by_address = tunnel(&client, &loopback(echo.port()), b"by address\n");
    by_address.success();
    assert_eq!(by_address.stdout(), "by address\n", "{by_address}");
    let opened = g.audit("tunnel_opened", |v| v["host"] == "127.0.0.1");
    assert_eq!(opened["dialled"], loopback(echo.port()), "{opened}");
    assert_eq!(opened["grant"], grant, "{opened}");

    // `localhost` is not a granted name, but it resolves into the granted
    // CIDR; the echo server listens on 127.0.0.1 only, so that is what
    // must have been dialled (also where localhost resolves to ::1 first).
    let by_name = tunnel(&client, &format!("localhost:{}", echo.port()), b"by name\n");
    by_name.success();
    assert_eq!(by_name.stdout(), "by name\n", "{by_name}");
    let opened = g.audit("tunnel_opened", |v| v["host"] == "localhost");
    assert_eq!(opened["dialled"], loopback(echo.port()), "{opened}");
    assert_eq!(opened["grant"], grant, "{opened}");
    assert_eq!(opened["group"], "dev", "{opened}");
}

#[test]
fn an_ungranted_port_is_administratively_prohibited() {
    let echo = TcpServer::echo();
    // Something listens there: the refusal is policy, not a failed connect.
    let other = TcpServer::banner("SSH-2.0-not-for-you\r\n");
    let (g, client) = one_user("optional", vec![format!("127.0.0.0/8:{}", echo.port())]);

    let out = tunnel(&client, &loopback(other.port()), b"x");
    out.failure().stderr_has("administratively prohibited");
    assert!(out.stdout.is_empty(), "{out}");
    let refused = g.audit("tunnel_refused", |_| true);
    assert_eq!(refused["via"], "direct-tcpip", "{refused}");
    assert_eq!(refused["port"], other.port(), "{refused}");
    assert!(
        field(&refused, "reason").contains("not granted"),
        "{refused}"
    );
    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn a_name_grant_alone_never_reaches_loopback() {
    let echo = TcpServer::echo();
    let (g, client) = one_user("optional", vec!["localhost:*".to_owned()]);

    let out = tunnel(&client, &format!("localhost:{}", echo.port()), b"x");
    out.failure().stderr_has("administratively prohibited");
    let refused = g.audit("tunnel_refused", |_| true);
    assert_eq!(refused["host"], "localhost", "{refused}");
    assert!(field(&refused, "reason").contains("loopback"), "{refused}");
    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn a_granted_destination_with_nothing_listening_is_connect_failed() {
    let port = crate::util::free_port();
    let (g, client) = one_user("optional", vec![format!("127.0.0.0/8:{port}")]);

    let out = tunnel(&client, &loopback(port), b"x");
    out.failure().stderr_has("connect failed");
    let refused = g.audit("tunnel_refused", |_| true);
    assert!(
        field(&refused, "reason").contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{refused}"
    );
    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn ssh_j_reaches_a_real_sshd_behind_the_jump() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let g = jump_to_sshd("required", &mut client, &sshd);
    client.answer_with_totp(&g.enroll("sean"));

    let out = run(
        client
            .ssh()
            .args(["-J", "jump", "target", "echo hello-from-target"]),
        b"",
    );
    out.success()
        .stderr_has("Authenticated using \"publickey\" with partial success.");
    assert_eq!(out.stdout(), "hello-from-target\n", "{out}");
    let opened = g.audit("tunnel_opened", |_| true);
    assert_eq!(opened["via"], "direct-tcpip", "{opened}");
    assert_eq!(opened["dialled"], sshd.addr.to_string(), "{opened}");
    g.audit("tunnel_closed", |v| v["dialled"] == sshd.addr.to_string());
    assert!(
        sshd.log()
            .contains(&format!("Accepted publickey for {}", sshd.user)),
        "{}",
        sshd.log()
    );
}

#[test]
fn the_nc_proxycommand_reaches_a_real_sshd_and_survives_idle() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let g = jump_to_sshd("optional", &mut client, &sshd);
    let proxy = format!(
        "ProxyCommand={} jump nc -w1 %h %p",
        client.ssh_command_line()
    );

    let out = run(client.ssh().args(["-o", &proxy, "target", "echo ok"]), b"");
    out.success();
    assert_eq!(out.stdout(), "ok\n", "{out}");
    let opened = g.audit("tunnel_opened", |_| true);
    assert_eq!(opened["via"], "exec-nc", "{opened}");
    assert_eq!(opened["dialled"], sshd.addr.to_string(), "{opened}");
    g.audit("tunnel_closed", |_| true);

    // A real `nc -w1` cuts the tunnel after 1 s of idle; gatehouse takes
    // -w as the connect timeout only, so an idle session lives on. The
    // sleep is the point of the test, not synchronisation.
    let idle = run(
        client
            .ssh()
            .args(["-o", &proxy, "target", "sleep 3; echo still-here"]),
        b"",
    );
    idle.success();
    assert_eq!(idle.stdout(), "still-here\n", "{idle}");
    let closed = g.audit("tunnel_closed", |v| v["conn"] != opened["conn"]);
    assert_eq!(closed["via"], "exec-nc", "{closed}");
}

#[test]
fn nc_exec_tunnels_carry_stdin_and_stdout() {
    let echo = TcpServer::echo();
    let other = TcpServer::banner("not granted\n");
    let (g, client) = one_user("optional", vec![format!("127.0.0.0/8:{}", echo.port())]);
    let port = echo.port().to_string();

    let plain = run(
        client.ssh().args(["jump", "nc", "127.0.0.1", &port]),
        b"plain nc\n",
    );
    plain.success();
    assert_eq!(plain.stdout(), "plain nc\n", "{plain}");
    let opened = g.audit("tunnel_opened", |_| true);
    assert_eq!(opened["via"], "exec-nc", "{opened}");
    assert_eq!(opened["dialled"], loopback(echo.port()), "{opened}");
    let closed = g.audit("tunnel_closed", |_| true);
    assert_eq!(
        (closed["bytes_up"].as_u64(), closed["bytes_down"].as_u64()),
        (Some(9), Some(9)),
        "{closed}"
    );

    let with_options = run(
        client
            .ssh()
            .args(["jump", "nc", "-q", "0", "-w", "3", "127.0.0.1", &port]),
        b"nc with options\n",
    );
    with_options.success();
    assert_eq!(with_options.stdout(), "nc with options\n", "{with_options}");
    g.audit("tunnel_opened", |v| v["conn"] != opened["conn"]);

    let ungranted = run(
        client.ssh().args([
            "-o",
            "LogLevel=ERROR",
            "jump",
            "nc",
            "127.0.0.1",
            &other.port().to_string(),
        ]),
        b"",
    );
    assert_eq!(ungranted.status.code(), Some(1), "{ungranted}");
    ungranted.stderr_has(&format!(
        "gatehouse: 127.0.0.1:{}: not granted",
        other.port()
    ));
    assert!(ungranted.stdout.is_empty(), "{ungranted}");
    let refused = g.audit("tunnel_refused", |_| true);
    assert_eq!(refused["via"], "exec-nc", "{refused}");
    assert_eq!(refused["port"], other.port(), "{refused}");
}

#[test]
fn tunnels_multiplex_over_one_controlmaster_connection() {
    // Several SSH packets and window updates per tunnel, all interleaved.
    const PAYLOAD: u32 = 256 * 1024;
    let echo = TcpServer::echo();
    let (g, client) = one_user("required", vec![format!("127.0.0.0/8:{}", echo.port())]);
    let secret = g.enroll("sean");
    client.answer_with_totp(&secret);
    let master = client.master(&[]);

    let to = loopback(echo.port());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..6_u8)
            .map(|i| {
                let (client, to) = (&client, &to);
                s.spawn(move || {
                    // Distinct bytes per tunnel, so crossed streams would show.
                    let payload: Vec<u8> = (0..PAYLOAD)
                        .map(|n| b'a' + ((n + u32::from(i)) % 26) as u8)
                        .collect();
                    // BatchMode: it must ride the master, never log in anew.
                    let out = run(&mut client.via_master(to), &payload);
                    out.success();
                    assert!(
                        out.stdout == payload,
                        "tunnel {i} got other bytes back: {out}"
                    );
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("tunnel thread");
        }
    });

    eventually("six tunnels closed", || {
        g.audits("tunnel_closed").len() == 6
    });
    let opened = g.audits("tunnel_opened");
    assert_eq!(opened.len(), 6);
    assert_eq!(g.audits("connection_opened").len(), 1, "one SSH connection");
    assert!(
        opened.iter().all(|v| v["conn"] == opened[0]["conn"]),
        "{opened:?}"
    );
    assert!(
        g.audits("tunnel_closed")
            .iter()
            .all(|v| v["bytes_up"] == PAYLOAD && v["bytes_down"] == PAYLOAD),
        "{:?}",
        g.audits("tunnel_closed")
    );

    client.exit_master().success();
    let gone = g.audit("connection_closed", |_| true);
    assert_eq!(gone["user"], "sean", "{gone}");
    // The master ends too (`-O exit` makes it exit 255): wait for it.
    master.finish();
}

#[test]
fn shell_exec_pty_and_sftp_are_refused() {
    let (g, client) = one_user("optional", vec!["127.0.0.0/8:22".to_owned()]);
    let refused = |request: &str| g.audit("request_refused", |v| v["request"] == request);

    let shell = run(client.ssh().args(["-T", "jump"]), b"");
    assert_eq!(shell.status.code(), Some(1), "{shell}");
    shell.stderr_has(&the_jump_host_line(&g));
    assert_eq!(refused("shell")["user"], "sean");

    let exec = run(client.ssh().args(["jump", "ls", "/"]), b"");
    assert_eq!(exec.status.code(), Some(1), "{exec}");
    exec.stderr_has(&the_jump_host_line(&g));
    assert!(exec.stdout.is_empty(), "{exec}");
    refused("exec");

    // A terminal is only ever granted for self-enrollment: this user has no
    // second factor, so `ssh -tt` gets the enrollment screen; with stdin at
    // EOF it ends without storing anything. (Refusal of a pty to an
    // enrolled user is in the enrollment tests.)
    let pty = run(client.ssh().args(["-tt", "jump"]), b"");
    assert_eq!(pty.status.code(), Some(1), "{pty}");
    assert!(
        pty.stdout()
            .contains("sean has no second factor yet. Let's set one up."),
        "{pty}"
    );
    assert!(
        pty.stdout().contains("Aborted; nothing was stored."),
        "{pty}"
    );
    g.audit("totp", |v| v["action"] == "enrollment_aborted");

    let sftp = run(client.sftp().arg("jump"), b"");
    sftp.failure().stderr_has(&the_jump_host_line(&g));
    let sftp = refused("subsystem");
    assert_eq!(sftp["detail"], "sftp: a jump host only proxies", "{sftp}");

    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn forwarding_requests_are_refused() {
    let (g, client) = one_user("optional", vec!["127.0.0.0/8:22".to_owned()]);
    let refused = |request: &str| g.audit("request_refused", |v| v["request"] == request);

    let remote = run(
        client.ssh().args([
            "-R",
            "0:127.0.0.1:1",
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "jump",
        ]),
        b"",
    );
    remote.failure().stderr_has("remote port forwarding failed");
    refused("tcpip-forward");

    let socket = client.dir().join("remote.sock");
    let remote_socket = run(
        client.ssh().args([
            "-R",
            &format!("{}:127.0.0.1:1", socket.display()),
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "jump",
        ]),
        b"",
    );
    remote_socket
        .failure()
        .stderr_has("remote port forwarding failed");
    refused("streamlocal-forward");

    let agent_socket = client.dir().join("agent.sock");
    let _agent = Daemon::start(
        "ssh-agent",
        tool("ssh-agent").arg("-D").arg("-a").arg(&agent_socket),
        &client.dir().join("agent.log"),
    );
    eventually("ssh-agent listening", || agent_socket.exists());
    let agent = run(
        client
            .ssh()
            .env("SSH_AUTH_SOCK", &agent_socket)
            .args(["-A", "-T", "jump"]),
        b"",
    );
    agent.failure();
    refused("agent");

    let env = run(
        client
            .ssh()
            .args(["-o", "SetEnv=GATEHOUSE_TEST=1", "-T", "jump"]),
        b"",
    );
    env.failure();
    assert_eq!(refused("env")["detail"], "GATEHOUSE_TEST");

    // Trusted X11 with no xauth program: ssh makes up a cookie and asks.
    let x11 = run(
        client.ssh().env("DISPLAY", ":0").args([
            "-X",
            "-o",
            "ForwardX11Trusted=yes",
            "-o",
            "XAuthLocation=/nonexistent",
            "-T",
            "jump",
        ]),
        b"",
    );
    x11.failure().stderr_has("X11 forwarding request failed");
    refused("x11");

    assert!(g.audits("tunnel_opened").is_empty());
}

#[test]
fn half_close_lets_the_answer_come_back() {
    let counter = TcpServer::count_until_eof();
    let (g, client) = one_user("optional", vec![format!("127.0.0.0/8:{}", counter.port())]);
    let data = vec![7_u8; 100_000];

    let direct = tunnel(&client, &loopback(counter.port()), &data);
    direct.success();
    assert_eq!(direct.stdout(), "got 100000 bytes", "{direct}");
    let closed = g.audit("tunnel_closed", |v| v["via"] == "direct-tcpip");
    assert_eq!(closed["bytes_up"], 100_000, "{closed}");
    assert_eq!(closed["bytes_down"], 16, "{closed}");
    assert_eq!(closed["reason"], "eof", "{closed}");

    // The legacy form: ssh's EOF on the exec channel is the half-close.
    let port = counter.port().to_string();
    let nc = run(client.ssh().args(["jump", "nc", "127.0.0.1", &port]), &data);
    nc.success();
    assert_eq!(nc.stdout(), "got 100000 bytes", "{nc}");
    let closed = g.audit("tunnel_closed", |v| v["via"] == "exec-nc");
    assert_eq!(closed["bytes_up"], 100_000, "{closed}");
    assert_eq!(closed["bytes_down"], 16, "{closed}");
}

#[test]
fn without_enrollment_the_key_gets_in_but_no_tunnel_until_enrolled() {
    let echo = TcpServer::echo();
    let (g, client) = one_user("required", vec![format!("127.0.0.0/8:{}", echo.port())]);

    let out = tunnel(&client, &loopback(echo.port()), b"x");
    out.failure()
        .stderr_has("Authenticated to 127.0.0.1")
        .stderr_has("using \"publickey\".")
        .stderr_has("administratively prohibited")
        .stderr_has("no second factor yet; set it up in a terminal first: ssh -p");
    assert!(out.stdout.is_empty(), "{out}");
    let auth = g.audit("auth", |_| true);
    assert_eq!(auth["result"], "enroll_only", "{auth}");
    let refused = g.audit("tunnel_refused", |_| true);
    assert!(field(&refused, "reason").contains("enroll"), "{refused}");

    // The legacy form is refused the same way, and a shell says why.
    let nc = run(
        client
            .ssh()
            .args(["jump", "nc", "127.0.0.1", &echo.port().to_string()]),
        b"x",
    );
    assert_eq!(nc.status.code(), Some(1), "{nc}");
    nc.stderr_has("sean has no second factor yet. Set it up in a terminal: ssh -p");
    g.audit("tunnel_refused", |v| v["via"] == "exec-nc");
    assert!(g.audits("tunnel_opened").is_empty());

    // Enrolled while running: the next login asks for a code and may tunnel.
    let secret = g.enroll("sean");
    client.answer_with_totp(&secret);
    let enrolled = tunnel(&client, &loopback(echo.port()), b"now enrolled\n");
    enrolled.success().stderr_has("partial success");
    assert_eq!(enrolled.stdout(), "now enrolled\n", "{enrolled}");
    g.audit("auth", |v| v["result"] == "accepted");
    g.audit("tunnel_opened", |_| true);
}

#[test]
fn the_hint_names_the_address_the_client_connected_to() {
    // The documented default listens on 0.0.0.0: the hint must name the
    // address the client used, never the wildcard, and bracket IPv6 as
    // `ssh -J user@[::1]:port` needs.
    let mut client = SshClient::new();
    // Both families, always: a machine without IPv6 loopback fails here
    // loudly rather than checking half of the hint (containers need
    // `sysctl net.ipv6.conf.lo.disable_ipv6=0`).
    if let Err(error) = std::net::TcpListener::bind("[::1]:0") {
        panic!("this test needs IPv6 loopback (::1): {error}");
    }
    let listen = ["\"0.0.0.0:0\"", "\"[::1]:0\""];
    let g = Gatehouse::start(
        &config(
            "optional",
            &[("sean", &client, &["dev"])],
            &[("dev", vec!["127.0.0.0/8:22".to_owned()])],
        )
        .replace("\"127.0.0.1:0\"", &listen.join(", ")),
    );
    let listening = g.listening("jump");
    let port = |v6: bool| {
        listening
            .iter()
            .find(|a| a.is_ipv6() == v6)
            .map(SocketAddr::port)
            .unwrap_or_else(|| panic!("no listener (IPv6: {v6}) in {listening:?}"))
    };
    let expect = [
        SocketAddr::from(([127, 0, 0, 1], port(false))),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port(true))),
    ];
    for jump in expect {
        client.add_host("jump", jump, "sean");
        let shell = run(client.ssh().args(["-T", "jump"]), b"");
        assert_eq!(shell.status.code(), Some(1), "{shell}");
        shell.stderr_has(&format!(
            "gatehouse is a jump host: use ssh -J sean@{jump} TARGET"
        ));
        let opened = g.audit("connection_opened", |v| v["local"] == jump.to_string());
        g.audit("request_refused", |v| v["conn"] == opened["conn"]);
    }
}
