//! Every client people use, through the jump host to a real sshd behind it
//! (key + code on the jump host, key on the target): the SSH libraries
//! (paramiko, asyncssh; `tests/clients/ssh_clients.py`), the file tools
//! over `-J` (scp, sftp, rsync, git), two gatehouses chained, agent
//! forwarding to the target only, Ansible (`tests/clients/ansible.rs`
//! for the playbooks), and the libraries of other languages: Go's
//! x/crypto/ssh, Node's ssh2, libssh2, libssh (`tests/clients/libraries.rs`).
//! Each test asserts what the user sees and the audit.

use std::path::Path;

use serde_json::Value;

use crate::{
    jump::{config, jump_to_sshd},
    util::{Gatehouse, Output, SshClient, Sshd, run, ssh_clients, tool},
};

mod ansible;
mod libraries;
mod putty_dropbear;

/// A jump host with `sean` (key + code, enrolled) granted `sshd`'s port,
/// and a client that knows `jump` and `target`, answering with codes.
fn jump_to(sshd: &Sshd, client: &mut SshClient) -> (Gatehouse, String) {
    let g = jump_to_sshd("required", client, sshd);
    let secret = g.enroll("sean");
    client.answer_with_totp(&secret);
    (g, secret)
}

/// `python3 tests/clients/ssh_clients.py LIBRARY ...` for `sean`.
fn library(name: &str, g: &Gatehouse, client: &SshClient, secret: &str, sshd: &Sshd) -> Output {
    run(&mut ssh_clients(name, g, "sean", client, secret, sshd), b"")
}

/// The value of the `key: value` line `key`.
fn said<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

/// The audit shows sean's key, then code, then a tunnel to `sshd`.
fn audited_key_code_tunnel(g: &Gatehouse, sshd: &Sshd) -> Value {
    g.audit("auth", |v| {
        v["user"] == "sean" && v["method"] == "publickey" && v["result"] == "partial"
    });
    g.audit("auth", |v| {
        v["user"] == "sean" && v["method"] == "keyboard-interactive" && v["result"] == "accepted"
    });
    g.audit("tunnel_opened", |v| v["dialled"] == sshd.addr.to_string())
}

#[test]
fn paramiko_key_then_code_then_a_second_hop_over_direct_tcpip() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, secret) = jump_to(&sshd, &mut client);
    let out = library("paramiko", &g, &client, &secret, &sshd);
    out.success();
    let text = out.stdout();
    assert_eq!(
        said(&text, "after key"),
        Some("keyboard-interactive"),
        "{out}"
    );
    assert_eq!(said(&text, "prompt"), Some("Verification code:"), "{out}");
    assert_eq!(said(&text, "after code"), Some("authenticated"), "{out}");
    assert_eq!(said(&text, "output"), Some("hello-from-target"), "{out}");
    assert_eq!(said(&text, "exit"), Some("0"), "{out}");
    let opened = audited_key_code_tunnel(&g, &sshd);
    assert_eq!(opened["via"], "direct-tcpip", "{opened}");
}

#[test]
fn asyncssh_key_then_code_then_a_tunnelled_connection() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, secret) = jump_to(&sshd, &mut client);
    let out = library("asyncssh", &g, &client, &secret, &sshd);
    out.success();
    let text = out.stdout();
    assert_eq!(said(&text, "prompt"), Some("Verification code:"), "{out}");
    assert_eq!(said(&text, "output"), Some("hello-from-target"), "{out}");
    let opened = audited_key_code_tunnel(&g, &sshd);
    assert_eq!(opened["via"], "direct-tcpip", "{opened}");
}

#[test]
fn scp_sftp_rsync_and_git_over_dash_j_with_one_code() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, _secret) = jump_to(&sshd, &mut client);
    // One ControlMaster to the jump host: one code for all four tools.
    client.share_connection("jump");
    let work = client.dir().join("files");
    std::fs::create_dir(&work).expect("mkdir");
    let source = work.join("source.txt");
    std::fs::write(&source, "through the jump host\n").expect("write");
    let config = client.config.display().to_string();
    let remote = |name: &str| format!("target:{}", work.join(name).display());

    run(
        client
            .with_env("scp")
            .args(["-F", &config, "-J", "jump"])
            .arg(&source)
            .arg(remote("by-scp.txt")),
        b"",
    )
    .success();
    let batch = format!(
        "put {} {}\n",
        source.display(),
        work.join("by-sftp.txt").display()
    );
    run(
        client.sftp().args(["-J", "jump", "-b", "-", "target"]),
        batch.as_bytes(),
    )
    .success();
    run(
        client
            .with_env("rsync")
            .args(["-e", &format!("ssh -F {config} -J jump")])
            .arg(&source)
            .arg(remote("by-rsync.txt")),
        b"",
    )
    .success();
    for copy in ["by-scp.txt", "by-sftp.txt", "by-rsync.txt"] {
        let got = std::fs::read_to_string(work.join(copy)).unwrap_or_default();
        assert_eq!(got, "through the jump host\n", "{copy}");
    }

    // git clone over ssh from a bare repository on the target.
    let bare = work.join("repo.git");
    let seed = work.join("seed");
    let git = |args: &[&str], dir: &Path| {
        run(
            tool("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                .args(["-c", "init.defaultBranch=main"])
                .arg("-C")
                .arg(dir)
                .args(args),
            b"",
        )
        .success();
    };
    std::fs::create_dir(&seed).expect("mkdir");
    git(&["init", "--bare", bare.to_str().expect("UTF-8")], &work);
    git(&["init"], &seed);
    std::fs::write(seed.join("README"), "cloned through gatehouse\n").expect("write");
    git(&["add", "README"], &seed);
    git(&["commit", "-m", "first"], &seed);
    git(&["push", bare.to_str().expect("UTF-8"), "HEAD:main"], &seed);
    let clone = work.join("clone");
    run(
        client
            .with_env("git")
            .env("GIT_SSH_COMMAND", format!("ssh -F {config} -J jump"))
            .args(["clone", &remote("repo.git")])
            .arg(&clone),
        b"",
    )
    .success();
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap_or_default(),
        "cloned through gatehouse\n"
    );

    // Four tunnels to the target's sshd over one login with one code.
    let codes = g.audits("auth");
    let codes: Vec<_> = codes
        .iter()
        .filter(|v| v["method"] == "keyboard-interactive" && v["result"] == "accepted")
        .collect();
    assert_eq!(codes.len(), 1, "{codes:?}");
    for n in 0..4 {
        g.audit_nth(n, "tunnel_opened", |v| {
            v["dialled"] == sshd.addr.to_string()
        });
    }
}

#[test]
fn two_gatehouses_chained_with_dash_j_jump1_jump2() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    // jump2 grants the target; jump1 grants only jump2.
    let jump2 = Gatehouse::start(&config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", sshd.addr.port())])],
    ));
    let jump1 = Gatehouse::start(&config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec![format!("127.0.0.1/32:{}", jump2.jump().port())])],
    ));
    client.add_host("jump1", jump1.jump(), "sean");
    client.add_host("jump2", jump2.jump(), "sean");
    client.add_host("target", sshd.addr, &sshd.user);
    // jump1's code is asked first, then jump2's (over jump1's tunnel).
    let (first, second) = (jump1.enroll("sean"), jump2.enroll("sean"));
    client.answer_with_totps(&[&first, &second]);
    let out = run(
        client
            .ssh()
            .args(["-J", "jump1,jump2", "target", "echo hello-over-two-jumps"]),
        b"",
    );
    out.success();
    assert_eq!(out.stdout(), "hello-over-two-jumps\n", "{out}");
    assert_eq!(client.prompts().len(), 2, "{:?}", client.prompts());
    let hop = jump1.audit("tunnel_opened", |_| true);
    assert_eq!(hop["dialled"], jump2.jump().to_string(), "{hop}");
    let last = jump2.audit("tunnel_opened", |_| true);
    assert_eq!(last["dialled"], sshd.addr.to_string(), "{last}");
    // jump2 saw the connection come from jump1's side of loopback.
    jump2.audit("auth", |v| {
        v["method"] == "keyboard-interactive" && v["result"] == "accepted"
    });
}

/// An ssh-agent holding `client`'s key, stopped when dropped.
struct Agent {
    socket: std::path::PathBuf,
    child: std::process::Child,
}

impl Agent {
    fn start(client: &SshClient) -> Agent {
        let socket = client.dir().join("agent.sock");
        let child = tool("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let deadline = std::time::Instant::now() + crate::util::PATIENCE;
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "ssh-agent did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run(
            tool("ssh-add")
                .env("SSH_AUTH_SOCK", &socket)
                .arg(&client.key),
            b"",
        )
        .success();
        Agent { socket, child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn agent_forwarding_reaches_the_final_host_and_never_the_jump_host() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, _secret) = jump_to(&sshd, &mut client);
    client.share_connection("jump");
    let agent = Agent::start(&client);

    // -A to the jump host itself (it opens the shared connection): the
    // agent request is refused and audited; the `nc` tunnel works.
    let out = run(
        client.ssh().env("SSH_AUTH_SOCK", &agent.socket).args([
            "-A",
            "jump",
            &format!("nc {} {}", sshd.addr.ip(), sshd.addr.port()),
        ]),
        b"",
    );
    assert!(out.stdout().starts_with("SSH-2.0-OpenSSH"), "{out}");

    // -A with -J: the agent goes to the target, over the tunnel.
    let out = run(
        client.ssh().env("SSH_AUTH_SOCK", &agent.socket).args([
            "-A",
            "-J",
            "jump",
            "target",
            "ssh-add -l",
        ]),
        b"",
    );
    out.success();
    assert!(out.stdout().contains("gatehouse-test (ED25519)"), "{out}");
    let refused = g.audit("request_refused", |v| v["request"] == "agent");
    assert_eq!(refused["user"], "sean", "{refused}");
}
