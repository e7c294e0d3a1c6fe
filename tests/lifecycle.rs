use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use crate::{
    dns::zone_config,
    util::{Gatehouse, dig, eventually, gatehouse_bin},
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
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(gatehouse_bin())
        .arg("run")
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", home.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
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
    let text = out.lock().map(|s| s.clone()).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("starting a loopback dev setup"), "{text}");
    assert!(
        text.contains("gateway.test and every name below it -> 127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("dig @127.0.0.1 -p 10053 admin.gateway.test"),
        "{text}"
    );
}
