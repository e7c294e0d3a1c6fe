use crate::{
    defence::with_limits,
    dns::zone_config,
    jump::config,
    util::{Gatehouse, SshClient, dig, eventually, run},
};

fn a(g: &Gatehouse, name: &str) -> Vec<String> {
    dig(g.dns(), &[name, "A"])
        .answer
        .iter()
        .map(|r| r.data.clone())
        .collect()
}

#[test]
fn an_in_place_rewrite_applies_live() {
    let g = Gatehouse::start(&zone_config(""));
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    g.write_config_in_place(&zone_config("").replace("192.168.222.16", "192.168.222.99"));
    eventually("new address served", || {
        a(&g, "saxophone.sean") == ["192.168.222.99"]
    });
    g.wait_for(|v| v["event"] == "reload" && v["trigger"] == "file" && v["result"] == "ok");
}

#[test]
fn a_rename_replace_applies_live_and_keeps_watching() {
    let g = Gatehouse::start(&zone_config(""));
    let with_piano = zone_config("").replace(
        "        v6only:",
        "        piano: 192.168.222.40\n        v6only:",
    );
    g.replace_config(&with_piano);
    eventually("new record served", || {
        a(&g, "piano.sean") == ["192.168.222.40"]
    });
    // The watch must survive the inode swap: a second replace applies too.
    g.replace_config(&with_piano.replace("192.168.222.40", "192.168.222.41"));
    eventually("second change served", || {
        a(&g, "piano.sean") == ["192.168.222.41"]
    });
}

#[test]
fn sighup_reloads() {
    let g = Gatehouse::start(&zone_config(""));
    g.signal("HUP");
    g.wait_for(|v| v["event"] == "reload" && v["trigger"] == "sighup" && v["result"] == "ok");
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
}

#[test]
fn an_invalid_file_keeps_the_old_config() {
    let g = Gatehouse::start(&zone_config(""));
    let broken = zone_config("")
        .replace("192.168.222.16", "192.168.222.99")
        .replace("ttl: 60s", "ttl: soon");
    g.write_config_in_place(&broken);
    let event = g.wait_for(|v| v["event"] == "reload" && v["result"] == "invalid");
    let error = event["error"].as_str().expect("error text");
    assert!(
        error.contains("gatehouse.yaml:5:8: dns.ttl: \"soon\": expected a duration such as 30s"),
        "{error}"
    );
    // Old answers, still served.
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    // And a later good file applies.
    g.write_config_in_place(&zone_config("").replace("192.168.222.16", "192.168.222.77"));
    eventually("fixed config applies", || {
        a(&g, "saxophone.sean") == ["192.168.222.77"]
    });
}

/// `max_auth_attempts` applies live, like the other limits: russh's
/// settings are rebuilt when a reload changes them (they were built once at
/// start, so a reload did nothing).
#[test]
fn max_auth_attempts_applies_on_reload() {
    let user = SshClient::new();
    let yaml = |attempts: u32| {
        with_limits(
            &config(
                "required",
                &[("sean", &user, &["dev"])],
                &[("dev", vec!["127.0.0.0/8:22".to_owned()])],
            ),
            &format!("max_auth_attempts: {attempts}"),
        )
    };
    let g = Gatehouse::start(&yaml(2));
    let mut stranger = SshClient::new();
    stranger.add_host("jump", g.jump(), "sean");
    let more_keys = [SshClient::new(), SshClient::new()];
    let three_keys = || {
        let mut cmd = stranger.ssh();
        for other in &more_keys {
            cmd.arg("-i").arg(&other.key);
        }
        run(cmd.args(["-W", "127.0.0.1:22", "jump"]), b"")
    };
    // russh counts the `none` probe: 2 attempts leave room for one key,
    // exactly (the review of issue 23 found the count exact; this pins it).
    three_keys()
        .failure()
        .stderr_has("Too many authentication attempts");
    let probes = |g: &Gatehouse| {
        g.audits("auth")
            .iter()
            .filter(|v| v["result"] == "rejected" && v["method"] == "publickey")
            .count()
    };
    assert_eq!(probes(&g), 1, "{:?}", g.audits("auth"));

    g.write_config_in_place(&yaml(10));
    g.wait_for(|v| v["event"] == "reload" && v["result"] == "ok");
    let out = three_keys();
    out.failure().stderr_has("Permission denied (publickey)");
    // All three keys were tried this time.
    assert_eq!(probes(&g), 1 + 3, "{:?}", g.audits("auth"));
    assert!(
        !out.stderr.contains("Too many authentication attempts"),
        "{out}"
    );
}

/// The server's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Issue 23 item 6: a hot reload with `keys_file: /dev/zero` would read
/// until memory ran out inside the server. Now it is an invalid reload
/// naming the file; the old config stays in force and the server's peak
/// memory does not grow (measured here: a few hundred KiB at most).
#[test]
fn a_reload_pointing_at_a_device_or_fifo_keeps_the_old_config() {
    let user = SshClient::new();
    let jump = format!(
        "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean: {{ keys: [\"{}\"] }}\n",
        user.public_key()
    );
    let good = format!("{}{jump}", zone_config(""));
    let g = Gatehouse::start(&good);
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    let fifo = g.dir.path().join("sean.pub");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let before = peak_rss_kib(g.pid());
    for (n, (file, why)) in [
        ("/dev/zero", "not a regular file (a character device)"),
        (
            fifo.to_str().expect("UTF-8 path"),
            "not a regular file (a FIFO)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let keys_file = format!("sean: {{ keys_file: \"{file}\" }}");
        let broken = good.replace("192.168.222.16", "192.168.222.99").replacen(
            &format!("sean: {{ keys: [\"{}\"] }}", user.public_key()),
            &keys_file,
            1,
        );
        assert!(broken.contains(&keys_file));
        g.write_config_in_place(&broken);
        let event = g.wait_for_nth(n, |v| v["event"] == "reload" && v["result"] == "invalid");
        let error = event["error"].as_str().expect("error text");
        assert!(
            error.contains(&format!(
                "jump.users.sean.keys_file: {file}: cannot read: {why}"
            )),
            "{error}"
        );
        assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    }
    let grown = peak_rss_kib(g.pid()).saturating_sub(before);
    assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB");
    eprintln!("peak RSS growth over two refused reloads: {grown} KiB");
}
