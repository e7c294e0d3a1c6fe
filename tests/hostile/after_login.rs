//! Attacks (and accidents) after a login, with OpenSSH: more connections
//! than a user may hold, reloads that take access away from live sessions,
//! and destinations probed through the jump host.

use std::time::Instant;

use serde_json::Value;

use crate::{
    defence::{closed, cut_off, jump_host, live_tunnel, ping},
    jump::{config, field, loopback, one_user, tunnel},
    util::{Gatehouse, SshClient, TcpServer, Terminal, run},
};

#[test]
fn max_connections_per_user_refuses_a_third_login_until_one_ends() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("optional", "max_connections_per_user: 2", echo.port());

    let (mut one, first) = live_tunnel(&g, &client, &to);
    let mut two = Terminal::start(client.ssh().args(["-W", &to, "jump"]));
    ping(&mut two, "two");
    let third = tunnel(&client, &to, b"three\n");
    third.failure().stderr_has("Permission denied (publickey)");
    assert!(third.stdout.is_empty(), "{third}");
    let refused = g.audit("auth", |v| v["result"] == "rejected");
    assert_eq!(
        refused["detail"], "max_connections_per_user reached (2 live)",
        "{refused}"
    );
    assert_eq!(refused["user"], "sean", "{refused}");
    assert_eq!(refused["method"], "publickey", "{refused}");
    assert_eq!(
        g.audits("auth")
            .iter()
            .filter(|v| v["result"] == "accepted")
            .count(),
        2
    );
    assert!(g.audits("tunnel_opened").len() == 2);

    // The two keep working; when one ends, its place is free again.
    ping(&mut one, "one again");
    ping(&mut two, "two again");
    one.close_stdin();
    one.finish().success();
    closed(&g, &first);
    let again = tunnel(&client, &to, b"again\n");
    again.success();
    assert_eq!(again.stdout(), "again\n", "{again}");
    ping(&mut two, "two still");
    two.close_stdin();
    two.finish().success();
}

#[test]
fn a_removed_grant_cuts_its_tunnel_and_not_another_on_the_same_connection() {
    let doomed_echo = TcpServer::echo();
    let kept_echo = TcpServer::echo();
    let mut client = SshClient::new();
    let yaml = |grants: &[String]| {
        config(
            "optional",
            &[("sean", &client, &["dev"])],
            &[("dev", grants.to_vec())],
        )
    };
    let doomed_grant = format!("127.0.0.0/8:{}", doomed_echo.port());
    let kept_grant = format!("127.0.0.1/32:{}", kept_echo.port());
    let both = yaml(&[doomed_grant.clone(), kept_grant.clone()]);
    let only_kept = yaml(&[kept_grant]);
    let g = Gatehouse::start(&both);
    client.add_host("jump", g.jump(), "sean");
    let _master = client.master(&[]);
    let mut doomed = Terminal::start(&mut client.via_master(&loopback(doomed_echo.port())));
    ping(&mut doomed, "doomed");
    let mut kept = Terminal::start(&mut client.via_master(&loopback(kept_echo.port())));
    ping(&mut kept, "kept");
    let conn = g.audit("tunnel_opened", |v| v["grant"] == doomed_grant.as_str())["conn"].clone();

    // The CIDR grant of the first tunnel leaves the config.
    g.write_config_in_place(&only_kept);
    let off = g.audit("offboarded", |_| true);
    assert!(field(&off, "reason").starts_with("grant removed"), "{off}");
    assert!(
        field(&off, "reason").contains(&format!(":{} ", doomed_echo.port())),
        "{off}"
    );
    assert_eq!(off["conn"], conn, "{off}");
    let ended = g.audit("tunnel_closed", |v| v["port"] == doomed_echo.port());
    assert_eq!(ended["conn"], conn, "{ended}");
    // Its client sees the tunnel end: EOF, and nothing after the echo.
    let out = doomed.finish();
    assert_eq!(out.stdout(), "doomed\n", "{out}");
    eprintln!("the cut tunnel's client: {}", out.status);

    // The other tunnel, on the same SSH connection, is still granted.
    ping(&mut kept, "kept after the reload");
    client.check_master().success();
    assert_eq!(
        g.audits("offboarded").len(),
        1,
        "{:?}",
        g.audits("offboarded")
    );
    assert!(
        g.audits("connection_closed").is_empty(),
        "{:?}",
        g.audits("connection_closed")
    );
    kept.close_stdin();
    kept.finish().success();
}

#[test]
fn mfa_turned_required_cuts_a_key_only_session() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("optional", "", echo.port());
    let (t, conn) = live_tunnel(&g, &client, &to);
    let accepted = g.audit("auth", |v| v["conn"] == conn && v["result"] == "accepted");
    assert_eq!(accepted["detail"], "no TOTP enrollment", "{accepted}");

    let yaml = std::fs::read_to_string(&g.config).expect("read config");
    let required = yaml.replacen("mfa: optional", "mfa: required", 1);
    assert_ne!(required, yaml);
    g.write_config_in_place(&required);
    let off = g.audit("offboarded", |_| true);
    assert_eq!(off["conn"], conn, "{off}");
    assert_eq!(off["user"], "sean", "{off}");
    assert!(field(&off, "reason").contains("mfa"), "{off}");
    let gone = closed(&g, &conn);
    assert!(field(&gone, "reason").starts_with("offboarded"), "{gone}");
    cut_off(t);
    // The key alone now only enrolls.
    tunnel(&client, &to, b"x").failure();
    g.audit("auth", |v| v["result"] == "enroll_only");
}

#[test]
fn totp_reset_from_the_cli_cuts_the_users_code_sessions() {
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let (g, client) = jump_host("required", "", echo.port());
    let secret = g.enroll("sean");
    client.answer_with_totp(&secret);
    let (t, conn) = live_tunnel(&g, &client, &to);
    let accepted = g.audit("auth", |v| v["conn"] == conn && v["result"] == "accepted");
    assert_eq!(accepted["method"], "keyboard-interactive", "{accepted}");

    // Another process removes the enrollment.
    let started = Instant::now();
    let out = g.totp("reset", "sean");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let off = g.audit("offboarded", |_| true);
    eprintln!("totp reset noticed after {:?}", started.elapsed());
    assert_eq!(off["conn"], conn, "{off}");
    assert_eq!(off["reason"], "TOTP enrollment reset", "{off}");
    closed(&g, &conn);
    cut_off(t);
}

/// The `open failed` line OpenSSH prints for a refused `-W`.
fn open_failed(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains("open failed"))
        .unwrap_or_else(|| panic!("no `open failed` line:\n{stderr}"))
        .to_owned()
}

#[test]
fn unresolvable_ungranted_and_loopback_destinations_get_one_answer() {
    let echo = TcpServer::echo();
    // Something listens on the ungranted port too: the refusal is policy.
    let other = TcpServer::echo();
    // Name grants only: `*.invalid` makes the lookup happen, `localhost`
    // resolves to loopback, which no name grant reaches.
    let (g, client) = one_user(
        "optional",
        vec![
            format!("*.invalid:{}", echo.port()),
            format!("localhost:{}", echo.port()),
        ],
    );
    let cases = [
        ("nosuchhost.invalid", echo.port(), "cannot resolve: "),
        (
            "localhost",
            other.port(),
            "not granted: no grant of the user's groups allows it",
        ),
        ("localhost", echo.port(), "is loopback or link-local"),
    ];
    let mut answers = Vec::new();
    for (host, port, reason) in cases {
        let to = format!("{host}:{port}");
        let w = tunnel(&client, &to, b"x");
        w.failure()
            .stderr_has("open failed: administratively prohibited");
        assert!(w.stdout.is_empty(), "{w}");
        let nc = run(
            client.ssh().args([
                "-o",
                "LogLevel=ERROR",
                "jump",
                "nc",
                host,
                &port.to_string(),
            ]),
            b"",
        );
        assert_eq!(nc.status.code(), Some(1), "{nc}");
        assert_eq!(
            nc.stderr.trim_end(),
            format!("gatehouse: {to}: not granted"),
            "{nc}"
        );
        assert!(nc.stdout.is_empty(), "{nc}");
        answers.push(open_failed(&w.stderr));

        // The audit log tells them apart, the same way for both. `nc`'s
        // refusal may reach the client before its line reaches the log:
        // read once it is there.
        g.audit("tunnel_refused", |v| {
            v["host"] == host && v["port"] == port && v["via"] == "exec-nc"
        });
        let refused: Vec<Value> = g
            .audits("tunnel_refused")
            .into_iter()
            .filter(|v| v["host"] == host && v["port"] == port)
            .collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0]["via"], "direct-tcpip", "{refused:?}");
        assert_eq!(refused[1]["via"], "exec-nc", "{refused:?}");
        for r in &refused {
            assert!(field(r, "reason").contains(reason), "{reason}: {r}");
        }
        eprintln!("{to}: {}", field(&refused[0], "reason"));
    }
    eprintln!("what the client saw each time: {}", answers[0]);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert!(g.audits("tunnel_opened").is_empty());
}

/// This host's first IPv4 address that is not loopback (the test machine
/// has one; a host without one cannot run this test, and says so).
fn an_interface_address() -> std::net::Ipv4Addr {
    nix::ifaddrs::getifaddrs()
        .expect("getifaddrs")
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
        .find(|ip| !ip.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on some interface")
}

#[test]
fn a_broad_grant_never_reaches_the_jump_hosts_own_interfaces() {
    // gatehouse listens on 127.0.0.1 only; the host has other addresses
    // (docker0, a management NIC): a broad grant must not reach them.
    let ip = an_interface_address();
    let echo = TcpServer::echo_on(std::net::IpAddr::V4(ip));
    let net = std::net::Ipv4Addr::from(u32::from(ip) & 0xffff_0000);
    let broad = format!("{net}/16:{}", echo.port());
    let (g, client) = one_user("optional", vec![broad]);
    let to = format!("{ip}:{}", echo.port());
    let w = tunnel(&client, &to, b"x");
    w.failure()
        .stderr_has("open failed: administratively prohibited");
    assert!(w.stdout.is_empty(), "{w}");
    let refused = g.audit("tunnel_refused", |v| v["host"] == ip.to_string().as_str());
    assert!(
        field(&refused, "reason").contains("is the jump host itself"),
        "{refused}"
    );

    // Only a grant of exactly that address reaches it.
    let exact = format!("{ip}/32:{}", echo.port());
    let (_g, client) = one_user("optional", vec![exact]);
    let w = tunnel(&client, &to, b"exact\n");
    w.success();
    assert_eq!(w.stdout(), "exact\n", "{w}");
}
