use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use crate::{
    dns::zone_config,
    util::{Gatehouse, SshClient, Sshd, dig, eventually, gatehouse_bin, run},
};

#[test]
fn sigterm_stops_cleanly() {
    let g = Gatehouse::start(&zone_config(""));
    let status = g.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn no_config_starts_the_loopback_dev_setup() {
    let default = std::path::Path::new("/etc/gatehouse/gatehouse.yaml");
    assert!(
        !default.exists(),
        "{} exists on this machine; this test needs it absent",
        default.display()
    );
    // A laptop: $HOME with a key in ~/.ssh, and $USER.
    let mut client = SshClient::new();
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join(".ssh")).expect("mkdir .ssh");
    std::fs::write(
        home.path().join(".ssh/id_ed25519.pub"),
        client.public_key() + "\n",
    )
    .expect("write key");
    let laptop = |cmd: &mut Command| {
        cmd.env("HOME", home.path())
            .env("USER", "devuser")
            .env_remove("XDG_STATE_HOME");
    };

    // Enroll first, on the dev setup (no --config, like `run`).
    let mut enroll = Command::new(gatehouse_bin());
    enroll.args(["totp", "enroll", "devuser"]);
    laptop(&mut enroll);
    let enrolled = enroll.output().expect("enroll");
    let text = String::from_utf8_lossy(&enrolled.stdout).into_owned();
    assert!(
        enrolled.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .map(|s| s.trim().to_owned())
        .expect("secret line");

    let mut run_cmd = Command::new(gatehouse_bin());
    run_cmd
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    laptop(&mut run_cmd);
    let mut child = run_cmd.spawn().expect("spawn");
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    let server = "127.0.0.1:10053".parse().expect("addr");
    eventually("dev DNS answers", || {
        dig(server, &["admin.gateway.test", "A"]).answer_data() == ["127.0.0.1"]
    });
    eventually("dev jump host listens", || {
        out.lock()
            .map(|s| s.contains("SSH jump host listening on 127.0.0.1:11122"))
            .unwrap_or(false)
    });

    // A real second hop through the dev jump host: key + code, ssh -J.
    let sshd = Sshd::start(&client.public_key());
    client.add_host("jump", "127.0.0.1:11122".parse().expect("addr"), "devuser");
    client.add_host("target", sshd.addr, &sshd.user);
    client.answer_with_totp(&secret);
    let hop = run(
        client
            .ssh()
            .args(["-J", "jump", "target", "echo", "dev-hop-ok"]),
        b"",
    );

    let text = out.lock().map(|s| s.clone()).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    hop.success().stderr_has("partial success");
    assert_eq!(hop.stdout(), "dev-hop-ok\n", "{hop}");
    assert!(text.contains("starting a loopback dev setup"), "{text}");
    assert!(
        text.contains("gateway.test and every name below it -> 127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("dig @127.0.0.1 -p 10053 admin.gateway.test"),
        "{text}"
    );
    assert!(
        text.contains("user `devuser` (1 keys from ~/.ssh/*.pub) may reach 127.0.0.0/8"),
        "{text}"
    );
    assert!(text.contains("ssh -J devuser@127.0.0.1:11122"), "{text}");
}
