use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use crate::{
    dns::zone_config,
    util::{Gatehouse, SshClient, Sshd, dig, enrollment_secret, eventually, gatehouse_bin, run},
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
    let secret = enrollment_secret(&text);

    let mut run_cmd = Command::new(gatehouse_bin());
    run_cmd
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    laptop(&mut run_cmd);
    // Killed on drop: the dev setup holds fixed ports (10053, 11122), and a
    // failed `eventually` below must not leave it running for later tests.
    let mut child = KilledOnDrop(run_cmd.spawn().expect("spawn"));
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    let stdout = child.0.stdout.take().expect("stdout");
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
    drop(child);
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

/// With `$USER` unset (containers, cron, systemd units), the dev setup
/// takes the account name of the uid it runs as, and its jump host (here:
/// the `ssh-config` generator, which falls back to the dev setup too) is
/// configured for that name rather than refused.
#[test]
fn the_dev_setup_without_user_takes_the_account_name() {
    let client = SshClient::new();
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join(".ssh")).expect("mkdir .ssh");
    std::fs::write(
        home.path().join(".ssh/id_ed25519.pub"),
        client.public_key() + "\n",
    )
    .expect("write key");
    let account = run(Command::new("id").arg("-un"), b"");
    let account = account.success().stdout().trim().to_owned();
    let out = run(
        Command::new(gatehouse_bin())
            .args([
                "ssh-config",
                "--jump",
                "127.0.0.1:11122",
                "--user",
                &account,
            ])
            .env_remove("USER")
            .env("HOME", home.path())
            .env_remove("XDG_STATE_HOME"),
        b"",
    );
    // Refused before ("the configuration has no `jump` section"); now the
    // dev jump host has this account as its user.
    out.success();
    assert!(out.stdout().contains("ProxyJump gatehouse-jump"), "{out}");
}

/// `log.level: trace` is gatehouse's own trace: dependencies stay at warn,
/// and a busy folder around the config (a log file written beside it, say)
/// neither reloads nor logs anything.
#[test]
fn trace_level_is_gatehouses_own_and_other_files_beside_the_config_are_ignored() {
    let user = SshClient::new();
    let yaml = crate::jump::config(
        "required",
        &[("sean", &user, &["dev"])],
        &[("dev", vec!["127.0.0.0/8:22".to_owned()])],
    )
    .replace(
        "log: { format: json }",
        "log: { format: json, level: trace }",
    );
    assert!(yaml.contains("level: trace"));
    let g = Gatehouse::start(&yaml);
    // Some SSH traffic for russh to have traced, were it allowed to.
    let mut stranger = SshClient::new();
    stranger.add_host("jump", g.jump(), "sean");
    run(stranger.ssh().args(["-W", "127.0.0.1:22", "jump"]), b"").failure();
    g.audit("connection_closed", |_| true);
    let before = g.events().len();
    // 200 writes to other files in the config's folder.
    let busy = g.dir.path().join("gatehouse.log");
    for i in 0..200 {
        std::fs::write(&busy, format!("line {i}\n")).expect("write");
    }
    // A change of the config itself still reloads: once it is logged, the
    // writes above (made earlier) have all been seen by the watcher.
    g.write_config_in_place(&yaml);
    g.wait_for(|v| v["event"] == "reload" && v["result"] == "ok");
    let events = g.events();
    let reloads = events.iter().filter(|v| v["event"] == "reload").count();
    assert_eq!(reloads, 1, "only the config's own change reloads");
    assert!(
        events.len() - before <= 5,
        "the busy folder added {} log lines",
        events.len() - before
    );
    let foreign: Vec<&serde_json::Value> = events
        .iter()
        .filter(|v| {
            let target = v["target"].as_str().unwrap_or("");
            !(target == "audit" || target.starts_with("gatehouse"))
        })
        .filter(|v| v["level"] != "WARN" && v["level"] != "ERROR")
        .collect();
    assert!(
        foreign.is_empty(),
        "dependency lines below warn: {foreign:?}"
    );
    // gatehouse's own debug and trace lines are there.
    assert!(
        events.iter().any(|v| v["level"] == "DEBUG"
            && v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("gatehouse_jump"))),
        "no debug line of gatehouse_jump"
    );
}

/// `gatehouse ARGS` in a scratch folder: (exit code, stdout).
fn cli(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = crate::util::gatehouse(args, dir.path());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn version_names_the_commit_and_completions_and_man_come_from_the_command_line() {
    let (code, version) = cli(&["--version"]);
    assert_eq!(code, Some(0));
    // "gatehouse 0.1.0 (0123456789ab)": the commit this binary was built from.
    let commit = crate::util::run(
        crate::util::tool("git").args(["rev-parse", "--short=12", "HEAD"]),
        b"",
    );
    let expected = if commit.status.success() {
        commit.stdout().trim().to_owned()
    } else {
        "unknown".to_owned()
    };
    assert_eq!(
        version.trim(),
        format!("gatehouse {} ({expected})", env!("CARGO_PKG_VERSION")),
        "{version}"
    );
    for (shell, marker) in [
        ("bash", "_gatehouse()"),
        ("zsh", "#compdef gatehouse"),
        ("fish", "complete -c gatehouse"),
    ] {
        let (code, text) = cli(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}");
        assert!(text.contains(marker), "{shell}: {text}");
        // Every subcommand is offered.
        for sub in [
            "run",
            "check",
            "ssh-config",
            "resolver",
            "bans",
            "totp",
            "completions",
            "man",
        ] {
            assert!(text.contains(sub), "{shell} lacks {sub}");
        }
    }
    let (code, man) = cli(&["man"]);
    assert_eq!(code, Some(0));
    assert!(
        man.starts_with(".ie") || man.contains(".TH gatehouse"),
        "{man}"
    );
    assert!(man.contains("ssh\\-config"), "{man}");
}

/// Issue 23 item 7: `chmod 0777 state/totp` started, and anyone could
/// plant an enrollment there. Now `run` refuses before it is ready (like
/// sshd's StrictModes), naming the folder and its mode.
#[test]
fn a_state_folder_others_can_write_stops_the_start_naming_it() {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let client = SshClient::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = crate::jump::config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec!["127.0.0.1/32:22".to_owned()])],
    );
    std::fs::write(dir.path().join("gatehouse.yaml"), yaml).expect("write config");
    let totp = dir.path().join("state/totp");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&totp)
        .expect("mkdir state/totp");
    std::fs::set_permissions(&totp, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let mut child = Command::new(gatehouse_bin())
        .args(["run", "--config"])
        .arg(dir.path().join("gatehouse.yaml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    // Until it exits (end of stdout), or says it is ready: then it started.
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.contains(r#""event":"ready""#) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gatehouse started with a world-writable state/totp: {line}");
        }
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "gatehouse: state folder {} has mode 0777: it must not be group- or world-writable (chmod go-w it)",
            dir.path().join("state/totp").display()
        )
    );
}

/// The host-certificate recipe (docs/operator.md) reads the host key right after the
/// start: it exists before gatehouse says `ready` (it came 100–200 ms
/// after, issue 25).
#[test]
fn the_host_key_exists_when_ready_is_said() {
    let client = SshClient::new();
    let g = Gatehouse::start(&crate::jump::config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec!["127.0.0.1/32:22".to_owned()])],
    ));
    // Gatehouse::start returned on the `ready` line: nothing waited since.
    let key = g.dir.path().join("state/host_keys/ssh_host_ed25519_key");
    assert!(key.is_file(), "{} missing at ready", key.display());
    // And the log says so in that order.
    let events = g.events();
    let at = |event: &str| {
        events
            .iter()
            .position(|v| v["event"] == event)
            .unwrap_or_else(|| panic!("no {event} line"))
    };
    assert!(at("host_key_generated") < at("ready"), "{events:?}");
}

/// A child process killed (and reaped) when dropped, panics included.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
