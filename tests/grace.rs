//! MFA grace (issue 28) with real clients: the seed's ProxyCommand with no
//! ControlMaster asks one code, then none for the same key from the same
//! source; another source or key asks again; `--end`, `totp reset`, the
//! key's removal and expiry each bring the prompt back; paramiko and
//! asyncssh take the notice round; two hosts on one Redis share a grace
//! and refuse a forged one.
//!
//! Codes are counted by askpass prompts (`SshClient::prompts`), never by
//! time. A step is accepted once per user, so a user logs in with a code
//! at most twice (now, and one step ahead within the skew).

use serde_json::Value;

use crate::{
    fleet::fleet_with,
    jump::field,
    util::{
        Gatehouse, Haproxy, Output, SshClient, Sshd, TcpServer, enrollment_secret, eventually,
        gatehouse, run, ssh_clients,
    },
};

/// `users` as (name, keys, group); groups `dev` (the jump-wide grace,
/// 30m) and `short` (2s), both granted `ports` on loopback.
pub(crate) fn yaml(users: &[(&str, &[&SshClient], &str)], ports: &[u16]) -> String {
    let allow: Vec<String> = ports
        .iter()
        .map(|p| format!("\"127.0.0.0/8:{p}\""))
        .collect();
    let allow = allow.join(", ");
    let mut text = format!(
        "state_dir: state\nlog: {{ format: json }}\njump:\n  listen: [\"127.0.0.1:0\"]\n  mfa: required\n  \
         mfa_grace: 30m\n  limits: {{ trusted: [\"127.0.0.0/8\"] }}\n  groups:\n    \
         dev: {{ allow: [{allow}] }}\n    short: {{ allow: [{allow}], mfa_grace: 2s }}\n  users:\n"
    );
    for (name, keys, group) in users {
        let keys: Vec<String> = keys
            .iter()
            .map(|c| format!("\"{}\"", c.public_key()))
            .collect();
        text.push_str(&format!(
            "    {name}: {{ keys: [{}], groups: [{group}] }}\n",
            keys.join(", ")
        ));
    }
    text
}

/// `gatehouse totp grace USER [ARGS]` on `g`'s config.
fn grace_cli(g: &Gatehouse, user: &str, args: &[&str]) -> String {
    let config = g.config.to_str().expect("UTF-8 config path");
    let mut all = vec!["totp", "grace", user];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    let out = gatehouse(&all, g.dir.path());
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A line through `ssh -W` to the echo server via `jump`; it must arrive.
fn echoed(client: &SshClient, echo: &TcpServer) -> Output {
    let out = client.echo_via("jump", echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    out
}

/// The TOTP step in a code login's audit line (`totp step N; ...`).
fn step_of(line: &Value) -> u64 {
    field(line, "detail")
        .strip_prefix("totp step ")
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step in {line}"))
}

/// Wait for the code login number `skip` (from 0) of `user` to be audited.
fn code_login(g: &Gatehouse, skip: usize, user: &str) -> Value {
    g.audit_nth(skip, "auth", |v| {
        v["user"] == user && v["method"] == "keyboard-interactive" && v["result"] == "accepted"
    })
}

#[test]
fn check_shows_each_users_grace_and_locates_a_bad_one() {
    let (sean, ana) = (SshClient::new(), SshClient::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let text = yaml(
        &[("sean", &[&sean], "short"), ("ana", &[&ana], "dev")],
        &[22],
    );
    std::fs::write(dir.path().join("g.yaml"), &text).expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("; 2 users, 2 groups, mfa required, mfa_grace 30m\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  user sean: 1 keys, groups [short], mfa_grace 2s\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  user ana: 1 keys, groups [dev], mfa_grace 30m\n"),
        "{stdout}"
    );

    std::fs::write(
        dir.path().join("g.yaml"),
        text.replace("mfa_grace: 2s", "mfa_grace: 1h"),
    )
    .expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "g.yaml:10:52: jump.groups.short.mfa_grace: 3600s is more than jump.mfa_grace (1800s): a \
         group may only lower it"
    );
}

#[test]
fn the_seed_proxycommand_asks_one_code_then_none_for_this_key_from_here() {
    let mut laptop = SshClient::new();
    let mut other_key = SshClient::new();
    let sshd = Sshd::start(&laptop.public_key());
    let g = Gatehouse::start(&yaml(
        &[("sean", &[&laptop, &other_key], "dev")],
        &[sshd.addr.port()],
    ));
    laptop.add_host("jump", g.jump(), "sean");
    laptop.add_host("target", sshd.addr, &sshd.user);
    let secret = g.enroll("sean");
    laptop.answer_with_totp_ahead(&secret);
    // The seed's ssh_config: `ProxyCommand ssh %r@jump nc -w1 %h %p`, no
    // ControlMaster: every `ssh` opens its own jump connection.
    let proxy = |bind: &str| {
        format!(
            "ProxyCommand={} {bind} jump nc -w1 %h %p",
            laptop.ssh_command_line()
        )
    };
    let seed = proxy("");
    let target = |proxy: &str| {
        let out = run(laptop.ssh().args(["-o", proxy, "target", "echo ok"]), b"");
        out.success();
        assert_eq!(out.stdout(), "ok\n", "{out}");
        out
    };

    let first = target(&seed);
    assert_eq!(laptop.prompts().len(), 1, "{:?}", laptop.prompts());
    // OpenSSH prints the prompt-less round's instruction.
    first.stderr_has("No code needed from 127.0.0.1 with this key until ");
    first.stderr_has(" UTC.");
    let began = code_login(&g, 0, "sean");
    let step = step_of(&began);
    assert!(
        field(&began, "detail").ends_with("; MFA grace begun"),
        "{began}"
    );
    assert!(began["began_grace_until"].is_u64(), "{began}");

    for _ in 0..5 {
        target(&seed);
    }
    assert_eq!(
        laptop.prompts().len(),
        1,
        "no code within the grace: {:?}",
        laptop.prompts()
    );
    let graced = g.audit_nth(4, "auth", |v| v["grace_step"].is_u64());
    let graced_lines: Vec<Value> = g
        .audits("auth")
        .into_iter()
        .filter(|v| v["grace_step"].is_u64())
        .collect();
    assert_eq!(graced_lines.len(), 5, "{graced_lines:?}");
    for line in &graced_lines {
        assert_eq!(line["result"], "accepted", "{line}");
        assert_eq!(line["method"], "publickey", "{line}");
        assert_eq!(line["fingerprint"], laptop.fingerprint(), "{line}");
        assert_eq!(line["grace_source"], "127.0.0.1", "{line}");
        assert_eq!(
            line["grace_step"], step,
            "the code login that began it: {line}"
        );
        assert_eq!(line["grace_conn"], began["conn"], "{line}");
        assert_eq!(line["grace_until"], began["began_grace_until"], "{line}");
    }
    assert_ne!(graced["conn"], began["conn"]);

    // Another source address: the code again (the next step's, as typed).
    target(&proxy("-b 127.0.0.2"));
    assert_eq!(laptop.prompts().len(), 2, "{:?}", laptop.prompts());
    let elsewhere = code_login(&g, 1, "sean");
    assert!(
        field(&elsewhere, "peer").starts_with("127.0.0.2:"),
        "{elsewhere}"
    );

    // The user's other key, from here: asked too. Its askpass answers
    // nothing (two steps are used already): the prompt is the point.
    other_key.add_host("jump", g.jump(), "sean");
    let to = format!("127.0.0.1:{}", sshd.addr.port());
    run(other_key.ssh().args(["-W", &to, "jump"]), b"").failure();
    assert_eq!(other_key.prompts().len(), 1, "{:?}", other_key.prompts());
    g.audit("auth", |v| {
        v["fingerprint"] == other_key.fingerprint() && v["result"] == "partial"
    });
}

#[test]
fn end_reset_key_removal_and_expiry_each_bring_the_code_back() {
    let echo = TcpServer::echo();
    let mut ana = SshClient::new();
    let mut kim = SshClient::new();
    let mut lee = SshClient::new();
    let mut max = SshClient::new();
    let spare = SshClient::new();
    let users = |lee_keys: &[&SshClient]| {
        yaml(
            &[
                ("ana", &[&ana], "dev"),
                ("kim", &[&kim], "dev"),
                ("lee", lee_keys, "dev"),
                ("max", &[&max], "short"),
            ],
            &[echo.port()],
        )
    };
    let (with_key, without_key) = (users(&[&lee]), users(&[&spare]));
    let g = Gatehouse::start(&with_key);
    for (name, client) in [
        ("ana", &mut ana),
        ("kim", &mut kim),
        ("lee", &mut lee),
        ("max", &mut max),
    ] {
        client.add_host("jump", g.jump(), name);
        let secret = g.enroll(name);
        client.answer_with_totp_ahead(&secret);
    }
    let code_then_grace = |client: &SshClient| {
        echoed(client, &echo);
        echoed(client, &echo);
        assert_eq!(client.prompts().len(), 1, "{:?}", client.prompts());
    };

    // `gatehouse totp grace ana` lists it; `--end` ends it.
    code_then_grace(&ana);
    let listed = grace_cli(&g, "ana", &[]);
    assert!(listed.contains(&ana.fingerprint()), "{listed}");
    assert!(listed.contains("127.0.0.1 "), "{listed}");
    assert_eq!(
        listed.lines().count(),
        2,
        "a header and one grace: {listed}"
    );
    assert_eq!(
        grace_cli(&g, "ana", &["--end"]),
        "ana: 1 MFA grace(s) ended; their next login asks a code.\n"
    );
    assert_eq!(grace_cli(&g, "ana", &[]), "ana: no MFA grace\n");
    echoed(&ana, &echo);
    assert_eq!(ana.prompts().len(), 2, "{:?}", ana.prompts());

    // `gatehouse totp reset`: the grace goes with the enrollment; with a
    // new one, the code is asked.
    code_then_grace(&kim);
    assert!(g.totp("reset", "kim").status.success());
    assert_eq!(grace_cli(&g, "kim", &[]), "kim: no MFA grace\n");
    let secret = g.enroll("kim");
    kim.answer_with_totp_ahead(&secret);
    echoed(&kim, &echo);
    assert_eq!(kim.prompts().len(), 2, "{:?}", kim.prompts());

    // The key removed from the config: its grace ends, and putting the
    // key back does not bring it back.
    code_then_grace(&lee);
    g.replace_config(&without_key);
    eventually("lee's grace ended by the reload", || {
        grace_cli(&g, "lee", &[]) == "lee: no MFA grace\n"
    });
    g.replace_config(&with_key);
    g.wait_for_nth(1, |v| v["event"] == "reload" && v["result"] == "ok");
    echoed(&lee, &echo);
    assert_eq!(lee.prompts().len(), 2, "{:?}", lee.prompts());

    // Expiry (group `short`: 2s): once it is over, the code is asked.
    echoed(&max, &echo);
    let began = code_login(&g, 0, "max");
    assert!(began["began_grace_until"].is_u64(), "{began}");
    eventually("max's grace is over", || {
        grace_cli(&g, "max", &[]) == "max: no MFA grace\n"
    });
    echoed(&max, &echo);
    assert_eq!(max.prompts().len(), 2, "{:?}", max.prompts());
    code_login(&g, 1, "max");
    assert!(
        !g.audits("auth")
            .iter()
            .any(|v| v["user"] == "max" && v["grace_step"].is_u64()),
        "both of max's logins typed a code"
    );
}

#[test]
fn behind_a_balancer_the_grace_is_bound_to_the_client_not_the_balancer() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let g = Gatehouse::start(&format!(
        "{}  proxy_protocol:\n    from: [\"127.0.0.9/32\"]\n",
        yaml(&[("sean", &[&client], "dev")], &[sshd.addr.port()])
    ));
    let lb = Haproxy::start(
        &[g.jump()],
        "send-proxy-v2",
        "127.0.0.9".parse().expect("ip"),
    );
    client.add_host("jump", lb.addr, "sean");
    client.add_host("target", sshd.addr, &sshd.user);
    client.answer_with_totp_ahead(&g.enroll("sean"));
    // The jump hop from `from` (a ProxyCommand passes `-b` on; -J would not).
    let login_from = |from: &str| {
        let proxy = format!(
            "ProxyCommand={} -b {from} -W %h:%p jump",
            client.ssh_command_line()
        );
        let out = run(
            client.ssh().args(["-o", &proxy, "target", "echo through"]),
            b"",
        );
        out.success();
        assert_eq!(out.stdout(), "through\n", "{out}");
        out
    };
    login_from("127.0.0.61").stderr_has("No code needed from 127.0.0.61 with this key until ");
    login_from("127.0.0.61");
    assert_eq!(client.prompts().len(), 1, "{:?}", client.prompts());
    let graced = g.audit("auth", |v| v["grace_step"].is_u64());
    assert_eq!(graced["grace_source"], "127.0.0.61", "{graced}");
    // Another client behind the same balancer: the code again.
    login_from("127.0.0.62");
    assert_eq!(client.prompts().len(), 2, "{:?}", client.prompts());
    let elsewhere = code_login(&g, 1, "sean");
    assert!(
        field(&elsewhere, "peer").starts_with("127.0.0.62:"),
        "{elsewhere}"
    );
}

#[test]
fn a_recovery_code_begins_no_grace() {
    let echo = TcpServer::echo();
    let mut rita = SshClient::new();
    let g = Gatehouse::start(&yaml(&[("rita", &[&rita], "dev")], &[echo.port()]));
    rita.add_host("jump", g.jump(), "rita");
    let enrolled = g.totp("enroll", "rita");
    assert!(enrolled.status.success(), "{enrolled:?}");
    let stdout = String::from_utf8_lossy(&enrolled.stdout).into_owned();
    let secret = enrollment_secret(&stdout);
    let recovery = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .unwrap_or_else(|| panic!("no recovery code in {stdout}"))
        .to_owned();

    rita.answer_with(&recovery);
    let out = echoed(&rita, &echo);
    assert!(!out.stderr.contains("No code needed"), "{out}");
    let used = code_login(&g, 0, "rita");
    assert_eq!(
        field(&used, "detail"),
        "recovery code used; 7 left",
        "{used}"
    );
    assert!(used.get("began_grace_until").is_none(), "{used}");
    assert_eq!(grace_cli(&g, "rita", &[]), "rita: no MFA grace\n");

    // The next login asks a code; a TOTP code does begin one.
    rita.answer_with_totp_ahead(&secret);
    echoed(&rita, &echo).stderr_has("No code needed from 127.0.0.1 with this key until ");
    assert_eq!(rita.prompts().len(), 2, "{:?}", rita.prompts());
    assert!(code_login(&g, 1, "rita")["began_grace_until"].is_u64());
}

#[test]
fn a_revoked_key_loses_its_grace_for_good() {
    let echo = TcpServer::echo();
    let mut rob = SshClient::new();
    let ca = SshClient::new();
    let g = Gatehouse::start(&yaml(&[("rob", &[&rob], "dev")], &[echo.port()]));
    // The revocation list (a list of public keys), empty for now.
    let revoked = g.dir.path().join("revoked");
    std::fs::write(&revoked, "").expect("write revoked");
    g.replace_config(&yaml(&[("rob", &[&rob], "dev")], &[echo.port()]).replace(
        "  mfa_grace: 30m\n",
        &format!(
            "  mfa_grace: 30m\n  user_ca: {{ keys: [\"{}\"], revoked_keys_file: \"{}\" }}\n",
            ca.public_key(),
            revoked.display()
        ),
    ));
    g.wait_for(|v| v["event"] == "reload" && v["result"] == "ok");
    rob.add_host("jump", g.jump(), "rob");
    let secret = g.enroll("rob");
    rob.answer_with_totp_ahead(&secret);
    echoed(&rob, &echo);
    echoed(&rob, &echo);
    assert_eq!(rob.prompts().len(), 1, "{:?}", rob.prompts());

    std::fs::write(&revoked, format!("{}\n", rob.public_key())).expect("revoke");
    eventually("rob's grace ended by the revocation", || {
        grace_cli(&g, "rob", &[]) == "rob: no MFA grace\n"
    });
    // Taken off the list again, the key logs in with a code.
    std::fs::write(&revoked, "").expect("un-revoke");
    let to = format!("127.0.0.1:{}", echo.port());
    eventually("the key is let in again", || {
        run(rob.ssh().args(["-W", &to, "jump"]), b"hi\n")
            .status
            .success()
    });
    assert_eq!(rob.prompts().len(), 2, "{:?}", rob.prompts());
}

/// `python3 tests/clients/ssh_clients.py LIBRARY` for `user` (target:
/// `sshd`); the output.
fn library(
    name: &str,
    g: &Gatehouse,
    user: &str,
    client: &SshClient,
    secret: &str,
    sshd: &Sshd,
) -> Output {
    run(&mut ssh_clients(name, g, user, client, secret, sshd), b"")
}

#[test]
fn paramiko_and_asyncssh_without_a_controlmaster_type_one_code() {
    let sean = SshClient::new();
    let ana = SshClient::new();
    let sshd = Sshd::start(&format!("{}\n{}", sean.public_key(), ana.public_key()));
    let g = Gatehouse::start(&yaml(
        &[("sean", &[&sean], "dev"), ("ana", &[&ana], "dev")],
        &[sshd.addr.port()],
    ));
    for (name, client, library_name) in [("sean", &sean, "paramiko"), ("ana", &ana, "asyncssh")] {
        let secret = g.enroll(name);
        let first = library(library_name, &g, name, client, &secret, &sshd);
        first.success();
        let text = first.stdout();
        assert!(
            text.contains("prompt: Verification code:"),
            "{library_name}: {text}"
        );
        assert!(
            text.contains("notice: No code needed from 127.0.0.1 with this key until "),
            "{library_name}: {text}"
        );
        assert!(
            text.contains("output: hello-from-target"),
            "{library_name}: {text}"
        );
        code_login(&g, 0, name);
        for _ in 0..2 {
            let again = library(library_name, &g, name, client, &secret, &sshd);
            again.success();
            let text = again.stdout();
            assert!(
                !text.contains("prompt:"),
                "{library_name}: no code asked: {text}"
            );
            assert!(
                text.contains("output: hello-from-target"),
                "{library_name}: {text}"
            );
        }
        g.audit_nth(1, "auth", |v| v["user"] == name && v["grace_step"].is_u64());
    }
}

#[test]
fn two_hosts_on_one_redis_share_a_grace_and_refuse_a_forged_one() {
    let f = fleet_with(2, "closed", "\"127.0.0.0/8\"", |yaml| {
        yaml.replace("  mfa: required\n", "  mfa: required\n  mfa_grace: 30m\n")
    });
    f.client.answer_with_totp_ahead(&f.secret);
    let through = |host: &str| {
        let out = f.client.echo_via(host, &f.echo);
        out.success();
        assert_eq!(out.stdout(), "hello\n", "{out}");
    };
    through("jump1");
    assert_eq!(f.client.prompts().len(), 1);
    // The code typed through one host covers the other.
    through("jump2");
    through("jump2");
    assert_eq!(f.client.prompts().len(), 1, "{:?}", f.client.prompts());
    let graced = f.hosts[1].audit("auth", |v| v["grace_step"].is_u64());
    assert_eq!(
        graced["grace_conn"],
        code_login(&f.hosts[0], 0, "sean")["conn"]
    );

    // The grace in Redis, signed; lengthened by hand (no seal key), it is
    // refused and audited, and the code is asked.
    let field_name = format!("{} 127.0.0.1", f.client.fingerprint());
    let stored = f.redis.cli(&["HGET", "test:grace:sean", &field_name]);
    let (mac, json) = stored.trim().split_once(' ').expect("MAC JSON");
    assert_eq!(mac.len(), 64, "{stored}");
    let mut grace: Value = serde_json::from_str(json).expect("grace JSON");
    grace["until"] = Value::from(grace["until"].as_u64().expect("until") + 86_400);
    let forged = format!("{mac} {grace}");
    f.redis
        .cli(&["HSET", "test:grace:sean", &field_name, &forged]);
    through("jump2");
    assert_eq!(f.client.prompts().len(), 2, "{:?}", f.client.prompts());
    let refused = f.hosts[1].audit("store_refused", |v| v["kind"] == "grace");
    assert_eq!(refused["reason"], "no valid MAC", "{refused}");
}
