//! PuTTY's plink and dropbear's dbclient through the jump host to a real
//! sshd, both as OpenSSH's ProxyCommand and as the whole chain. Both ask
//! for the code on the terminal (no askpass): `on_a_tty.py` gives them one
//! and types the code when the prompt shows, as a person would.

use std::path::Path;

use crate::{
    jump::jump_to_sshd,
    util::{Gatehouse, Output, SshClient, Sshd, fingerprint, python_client, run, tool},
};

/// A jump host for `sean` (key + code) granting `sshd`; the secret.
fn jump_host(sshd: &Sshd, client: &mut SshClient) -> (Gatehouse, String) {
    let g = jump_to_sshd("required", client, sshd);
    let secret = g.enroll("sean");
    (g, secret)
}

/// `on_a_tty.py --secret SECRET -- COMMAND...`: `cmd` on a terminal whose
/// code prompts are answered.
fn on_a_tty(secret: &str, cmd: &[&str], home: &Path) -> Output {
    run(
        python_client("on_a_tty.py")
            .env("HOME", home)
            .args(["--secret", secret, "--"])
            .args(cmd),
        b"",
    )
}

/// OpenSSH's `ssh target echo WHAT` with `proxy` (`ProxyCommand=...`), on
/// a terminal whose code prompts are answered from `secret`.
fn openssh_via(client: &SshClient, proxy: &str, secret: &str, what: &str) -> Output {
    let config = client.config.display().to_string();
    let echo = format!("echo {what}");
    on_a_tty(
        secret,
        &["ssh", "-F", &config, "-o", proxy, "target", &echo],
        client.dir(),
    )
}

/// A PuTTY saved session `name` under `home` that proxies loopback
/// destinations too: PuTTY sends connections to localhost direct by
/// default (`ProxyLocalhost`), and every host in these tests is loopback.
fn putty_session(home: &Path, name: &str) {
    let sessions = home.join(".putty/sessions");
    std::fs::create_dir_all(&sessions).expect("mkdir .putty/sessions");
    std::fs::write(sessions.join(name), "ProxyLocalhost=1\n").expect("write session");
}

/// The jump host's host key fingerprint, from its log.
fn jump_fingerprint(g: &Gatehouse) -> String {
    let generated = g.wait_for(|v| v["event"] == "host_key_generated");
    generated["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("no fingerprint: {generated}"))
        .to_owned()
}

/// The whole login and command went through: the code was asked once, the
/// target answered, and the audit shows key, code and the tunnel.
fn went_through(out: &Output, g: &Gatehouse, sshd: &Sshd, said: &str) {
    out.success();
    assert!(out.stdout().contains(said), "{out}");
    assert_eq!(
        out.stdout().matches("Verification code:").count(),
        1,
        "{out}"
    );
    g.audit("auth", |v| {
        v["method"] == "keyboard-interactive" && v["result"] == "accepted"
    });
    g.audit("tunnel_opened", |v| v["dialled"] == sshd.addr.to_string());
}

#[test]
fn plink_nc_as_openssh_proxycommand_and_plink_proxycmd_end_to_end() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, secret) = jump_host(&sshd, &mut client);
    let ppk = client.dir().join("key.ppk").display().to_string();
    run(
        tool("puttygen")
            .arg(&client.key)
            .args(["-O", "private", "-o", &ppk]),
        b"",
    )
    .success();
    let plink_nc = |g: &Gatehouse, to: &str| {
        format!(
            "plink -ssh -P {} -l sean -i {ppk} -hostkey {} -nc {to} 127.0.0.1",
            g.jump().port(),
            jump_fingerprint(g)
        )
    };

    // OpenSSH to the target, plink -nc as its ProxyCommand.
    let proxy = format!("ProxyCommand={}", plink_nc(&g, "%h:%p"));
    let out = openssh_via(&client, &proxy, &secret, "via-plink-nc");
    went_through(&out, &g, &sshd, "via-plink-nc");

    // plink to the target too: -proxycmd with plink -nc. Another jump
    // host: a code logs in once, and this one would be the same code.
    let (g, secret) = jump_host(&sshd, &mut client);
    putty_session(client.dir(), "proxied");
    let out = on_a_tty(
        &secret,
        &[
            "plink",
            "-load",
            "proxied",
            "-ssh",
            "-batch",
            "-P",
            &sshd.addr.port().to_string(),
            "-l",
            &sshd.user,
            "-i",
            &ppk,
            "-hostkey",
            &fingerprint(&sshd.host_key),
            "-proxycmd",
            &plink_nc(&g, "%host:%port"),
            "127.0.0.1",
            "echo via-plink-proxycmd",
        ],
        client.dir(),
    );
    went_through(&out, &g, &sshd, "via-plink-proxycmd");
}

#[test]
fn dbclient_b_as_openssh_proxycommand_and_dbclient_j_end_to_end() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, secret) = jump_host(&sshd, &mut client);
    let key = client.dir().join("key.db").display().to_string();
    run(
        tool("dropbearconvert")
            .args(["openssh", "dropbear"])
            .arg(&client.key)
            .arg(&key),
        b"",
    )
    .success();
    let dbclient_b = |g: &Gatehouse, to: &str| {
        format!(
            "dbclient -y -y -i {key} -p {} -B {to} sean@127.0.0.1",
            g.jump().port()
        )
    };

    let proxy = format!("ProxyCommand={}", dbclient_b(&g, "%h:%p"));
    let out = openssh_via(&client, &proxy, &secret, "via-dbclient-b");
    went_through(&out, &g, &sshd, "via-dbclient-b");

    // dbclient all the way, its -J running dbclient -B (another jump
    // host, as above).
    let (g, secret) = jump_host(&sshd, &mut client);
    let target = format!("{}@127.0.0.1", sshd.user);
    let out = on_a_tty(
        &secret,
        &[
            "dbclient",
            "-y",
            "-y",
            "-i",
            &key,
            "-J",
            &dbclient_b(&g, &sshd.addr.to_string()),
            "-p",
            &sshd.addr.port().to_string(),
            &target,
            "echo via-dbclient-j",
        ],
        client.dir(),
    );
    went_through(&out, &g, &sshd, "via-dbclient-j");
}
