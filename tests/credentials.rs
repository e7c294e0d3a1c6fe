//! Which credential a session stands on, as attacks with real clients: a
//! certificate for one user then another user's plain key on one
//! connection (paramiko), the session then judged by the key; and a plain
//! key revoked in `revoked_keys_file` (`ssh-keygen -k`, a `key:` line),
//! refused at the probe (OpenSSH) and at the signature (asyncssh, holding
//! its signature back) and its live session cut.
//!
//! Owns these end-to-end cases only; certificates' own rules are
//! `certs.rs`'s.

use std::path::Path;

use crate::{
    certs::Ca,
    defence::closed,
    hostile::{attack, said},
    util::{Daemon, Gatehouse, SshClient, TcpServer, Terminal, eventually, go_on, run, tool},
};

/// The reason a revoked plain key is given, at login and when cut.
const REVOKED: &str = "key revoked (jump.user_ca.revoked_keys_file)";

/// `mfa: optional`, `ca` trusted with `revoked` as its revocation file,
/// `users` (YAML lines under `users:`) in group `dev`, allowed to `echo`.
fn config(ca: &Ca, revoked: &Path, users: &str, echo: u16) -> String {
    format!(
        "state_dir: state\nlog: {{ format: json }}\njump:\n  listen: [\"127.0.0.1:0\"]\n  \
         mfa: optional\n  user_ca:\n    keys: [\"{}\"]\n    revoked_keys_file: \"{}\"\n  \
         users:\n{users}  groups:\n    dev: {{ allow: [\"127.0.0.0/8:{echo}\"] }}\n",
        ca.public(),
        revoked.display()
    )
}

#[test]
fn a_certificate_then_another_users_key_on_one_connection_is_judged_by_the_key() {
    let echo = TcpServer::echo();
    let ca = Ca::new();
    let (alice, bob, stranger) = (SshClient::new(), SshClient::new(), SshClient::new());
    let revoked = alice.dir().join("revoked");
    std::fs::write(&revoked, "").expect("write");
    // alice: certificates only, enrolled (her certificate is a partial
    // success); bob: a plain key, not enrolled (`mfa: optional`: in on
    // the key alone).
    let yaml = |bob_key: &str| {
        let users = format!(
            "    alice: {{ groups: [dev] }}\n    bob: {{ keys: [\"{bob_key}\"], groups: [dev] }}\n"
        );
        config(&ca, &revoked, &users, echo.port())
    };
    let g = Gatehouse::start(&yaml(&bob.public_key()));
    g.enroll("alice");
    ca.sign_user(&alice, "alice@laptop", &["-n", "alice", "-V", "-5m:+1h"]);

    let log = alice.dir().join("cert-then-key.log");
    let mut cmd = attack("cert-then-key", g.jump().port());
    cmd.args(["--cert-user", "alice", "--user", "bob"])
        .arg("--cert-key")
        .arg(&alice.key)
        .arg("--cert")
        .arg(alice.key.with_file_name("id_ed25519-cert.pub"))
        .arg("--key")
        .arg(&bob.key)
        .args(["--to", &format!("127.0.0.1:{}", echo.port())]);
    let mut attacker = Daemon::start("cert-then-key", &mut cmd, &log);
    eventually("a tunnel as bob", || attacker.log().contains("echo: ping"));
    let out = attacker.log();
    assert_eq!(
        said(&out, "after certificate"),
        Some("keyboard-interactive"),
        "{out}"
    );
    assert_eq!(said(&out, "after key"), Some("authenticated"), "{out}");

    let partial = g.audit("auth", |v| v["result"] == "partial");
    assert_eq!(partial["user"], "alice", "{partial}");
    assert_eq!(
        partial["detail"], "certificate accepted; TOTP code next",
        "{partial}"
    );
    let conn = partial["conn"].clone();
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(accepted["conn"], conn, "one connection: {accepted}");
    assert_eq!(accepted["user"], "bob", "{accepted}");
    assert_eq!(accepted["detail"], "no TOTP enrollment", "{accepted}");
    let opened = g.audit("tunnel_opened", |v| v["conn"] == conn);
    assert_eq!(opened["user"], "bob", "{opened}");

    // Offboarding bob: his key leaves the config. The session stands on
    // that key (not on alice's certificate from the earlier attempt), so
    // it is cut.
    g.replace_config(&yaml(&stranger.public_key()));
    let off = g.audit("offboarded", |v| v["conn"] == conn);
    assert_eq!(off["user"], "bob", "{off}");
    assert_eq!(off["reason"], "key removed from the configuration", "{off}");
    let ended = closed(&g, &conn);
    assert_eq!(
        ended["reason"], "offboarded: access revoked by a configuration reload",
        "{ended}"
    );
    go_on(attacker.pid());
    eventually("the attacker's report", || attacker.exited().is_some());
    let out = attacker.log();
    assert_eq!(said(&out, "closed by server"), Some("yes"), "{out}");
}

#[test]
fn a_plain_key_in_the_krl_is_refused_at_probe_and_signature_and_its_session_cut() {
    let echo = TcpServer::echo();
    let to = format!("127.0.0.1:{}", echo.port());
    let ca = Ca::new();
    let mut client = SshClient::new();
    let revoked = client.dir().join("revoked");
    std::fs::write(&revoked, "").expect("write");
    let users = format!(
        "    sean: {{ keys: [\"{}\"], groups: [dev] }}\n",
        client.public_key()
    );
    let g = Gatehouse::start(&config(&ca, &revoked, &users, echo.port()));
    g.wait_for(|v| v["event"] == "revoked_keys_loaded");
    client.add_host("jump", g.jump(), "sean");

    // A live session on the key.
    let mut live = Terminal::start(client.ssh().args(["-W", &to, "jump"]));
    live.send(b"ping\n");
    live.expect("ping\n");
    let conn = g.audit("auth", |v| v["result"] == "accepted")["conn"].clone();

    // asyncssh probes the same key (accepted) and holds its signature back.
    let probed = client.dir().join("probed");
    let mut cmd = attack("login", g.jump().port());
    cmd.arg("--key")
        .arg(&client.key)
        .arg("--probed")
        .arg(&probed)
        .arg("--sign-when");
    let mut held = Daemon::start("held signature", &mut cmd, &client.dir().join("held.log"));
    eventually("the probe accepted", || probed.exists());

    // The key is revoked as sshd's RevokedKeys takes it: `ssh-keygen -k`.
    let spec = client.dir().join("krl.spec");
    std::fs::write(&spec, format!("key: {}\n", client.public_key())).expect("spec");
    let fresh = client.dir().join("revoked.new");
    run(
        tool("ssh-keygen").args(["-k", "-f"]).arg(&fresh).arg(&spec),
        b"",
    )
    .success();
    std::fs::rename(&fresh, &revoked).expect("rename");
    g.wait_for_nth(1, |v| v["event"] == "revoked_keys_loaded");

    // The live session is cut.
    let off = g.audit("offboarded", |v| v["conn"] == conn);
    assert_eq!(off["reason"], REVOKED, "{off}");
    assert_eq!(off["user"], "sean", "{off}");
    live.finish().failure();

    // The held signature comes now: refused at the signed step.
    go_on(held.pid());
    eventually("the held login's end", || held.exited().is_some());
    let out = held.log();
    assert_eq!(said(&out, "probe"), Some("accepted"), "{out}");
    assert_eq!(said(&out, "result"), Some("refused"), "{out}");
    let signed = g.audit("auth", |v| {
        v["result"] == "rejected" && v["detail"] == REVOKED
    });
    assert_ne!(signed["conn"], conn, "{signed}");

    // OpenSSH now: refused at the probe (it never signs).
    let again = run(client.ssh().args(["-W", &to, "jump"]), b"hello\n");
    again.failure().stderr_has("Permission denied (publickey)");
    let probe = g.audit("auth", |v| {
        v["result"] == "rejected" && v["detail"] == format!("{REVOKED} (probe)").as_str()
    });
    assert_eq!(probe["user"], "sean", "{probe}");
    assert_eq!(
        g.audits("tunnel_opened").len(),
        1,
        "only the first session's"
    );
}
