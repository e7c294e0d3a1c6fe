use std::path::Path;

use crate::{dns::zone_config, util::gatehouse};

#[test]
fn a_valid_config_exits_zero_with_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("g.yaml"), zone_config("")).expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("g.yaml: OK\n"), "{stdout}");
    assert!(stdout.contains("jump: not configured"), "{stdout}");
    assert!(
        stdout.contains("dns: listen 127.0.0.1:0; 1 zones, 6 records, ttl 60s"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("zone sean: saxophone.sean, trombone.sean, gateway.sean, cdn.saxophone.sean"),
        "{stdout}"
    );
}

#[test]
fn an_invalid_config_exits_one_naming_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = zone_config("").replace("trombone: 192.168.222.17", "trombone: 192.168.222.300");
    std::fs::write(dir.path().join("g.yaml"), text).expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        r#"g.yaml:10:19: dns.zones.sean.records.trombone: "192.168.222.300": expected an IPv4 or IPv6 address"#
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_yaml_error_names_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("g.yaml"),
        "dns:\n  listen: [\"127.0.0.1:53\"]\n  zonez: {}\n",
    )
    .expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("g.yaml:3:3: dns: unknown field `zonez`, expected one of"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_exits_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = gatehouse(&["check", "--config", "nope.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("nope.yaml: cannot read:"), "{stderr}");
}

#[test]
fn run_refuses_an_invalid_config_with_the_same_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("g.yaml"),
        "dns:\n  listen: [\"127.0.0.1:99999\"]\n",
    )
    .expect("write");
    let out = gatehouse(&["run", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"g.yaml:2:12: dns.listen[0]: "127.0.0.1:99999": expected IP:PORT"#),
        "{stderr}"
    );
}

/// The config shown first on the front page (thirteen lines) and the whole one
/// of the operator's reference both pass `check`.
#[test]
fn the_documented_examples_are_valid() {
    for doc in ["README.md", "docs/operator.md"] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))
            .expect("the doc");
        let start = text.find("```yaml\n").expect("a yaml block") + 8;
        let len = text[start..].find("```").expect("end of the yaml block");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gatehouse.yaml"), &text[start..start + len])
            .expect("write");
        let out = gatehouse(&["check", "--config", "gatehouse.yaml"], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{doc}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("mfa required"), "{doc}: {stdout}");
        assert!(
            stdout.contains("zone sean: saxophone.sean"),
            "{doc}: {stdout}"
        );
        // Where the doc shows what `check` printed for it, that is what it prints.
        let shown = "$ gatehouse check --config gatehouse.yaml\n";
        if let Some(at) = text.find(shown) {
            let rest = &text[at + shown.len()..];
            let end = [rest.find("\n\n$ "), rest.find("\n```")]
                .into_iter()
                .flatten()
                .min()
                .expect("end of the output shown");
            assert_eq!(&rest[..end + 1], stdout, "{doc}: the output shown");
        }
    }
}

/// `check --against RUNNING`: configuration management learns whether the
/// new file needs a restart (listeners) or applies by reload (records).
#[test]
fn check_against_the_running_config_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = zone_config("");
    std::fs::write(dir.path().join("running.yaml"), &running).expect("write");
    let run = |text: &str| {
        std::fs::write(dir.path().join("new.yaml"), text).expect("write");
        let out = gatehouse(
            &["check", "--config", "new.yaml", "--against", "running.yaml"],
            dir.path(),
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let live = run(&running.replace("trombone: 192.168.222.17", "trombone: 192.168.222.18"));
    assert!(live.starts_with("new.yaml: OK\n"), "{live}");
    assert!(!live.contains("restart needed"), "{live}");
    let moved = run(&running.replace("127.0.0.1:0", "127.0.0.1:10053"));
    assert!(moved.ends_with("\nrestart needed: dns.listen\n"), "{moved}");
    // A running config that does not load: restart, to be safe.
    std::fs::write(dir.path().join("running.yaml"), "dns: [").expect("write");
    let unknown = run(&running);
    assert!(
        unknown.ends_with("\nrestart needed: everything (running.yaml does not load)\n"),
        "{unknown}"
    );
}

#[test]
fn a_zone_that_is_a_public_tld_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = zone_config("").replace("    sean:\n", "    dev:\n");
    std::fs::write(dir.path().join("g.yaml"), text).expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert!(out.status.success(), "a warning, not an error: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "g.yaml: warning: zone `dev` is a public suffix delegated in the real DNS"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("use `test` (RFC 2606) or `internal`"),
        "{stderr}"
    );
    // A private TLD, and `internal` itself, are not warned about.
    for zone in ["sean", "internal", "test"] {
        let text = zone_config("").replace("    sean:\n", &format!("    {zone}:\n"));
        std::fs::write(dir.path().join("g.yaml"), text).expect("write");
        let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{zone}");
    }
}

#[test]
fn a_typo_in_a_typed_record_names_the_field_and_the_choices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = zone_config("        www: { cnmae: saxophone.sean. }\n");
    std::fs::write(dir.path().join("g.yaml"), text).expect("write");
    let out = gatehouse(&["check", "--config", "g.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim_end().ends_with(
            "dns.zones.sean.records.www: unknown field `cnmae`, expected one of `addrs`, `cname`, `txt`, `mx`, `srv`"
        ),
        "{stderr}"
    );
    assert!(stderr.starts_with("g.yaml:15:"), "{stderr}");
}

/// Issue 23 item 6: `keys_file: /dev/zero` made `check` read 6.5 GB in 20 s
/// until memory ran out. A device, a FIFO (whose open would wait for a
/// writer) and a file past its cap are refused by what they are, naming
/// the file and the limit. Run under a 1 GiB address-space limit
/// (`prlimit`): the old reader then failed with "cannot read: out of
/// memory" after filling it, which the exact message below tells apart.
#[test]
fn a_keys_file_that_is_a_device_a_fifo_or_too_big_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("fifo.pub"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::write(dir.path().join("big.pub"), vec![b'#'; 1024 * 1024 + 1]).expect("write");
    let check = |config: &str| {
        std::process::Command::new("prlimit")
            .arg("--as=1073741824")
            .arg(crate::util::gatehouse_bin())
            .args(["check", "--config", config])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run gatehouse check under prlimit")
    };
    for (file, why) in [
        ("/dev/zero", "not a regular file (a character device)"),
        ("fifo.pub", "not a regular file (a FIFO)"),
        ("big.pub", "larger than 1 MiB, the limit for a keys_file"),
    ] {
        std::fs::write(
            dir.path().join("g.yaml"),
            format!(
                "jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n    sean:\n      keys_file: {file}\n"
            ),
        )
        .expect("write");
        let out = check("g.yaml");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("g.yaml:5:18: jump.users.sean.keys_file: {file}: cannot read: {why}")
        );
    }
    // The config itself.
    let out = check("/dev/zero");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "/dev/zero: cannot read: not a regular file (a character device)"
    );
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, other
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every relative link of the front page and the docs names a file that
/// exists, and a heading in it where it names one.
#[test]
fn the_docs_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        docs.push(entry.expect("entry").path());
    }
    let headings = |path: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut fenced = false;
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
            } else if !fenced && line.starts_with('#') {
                out.push(anchor(line.trim_start_matches('#')));
            }
        }
        out
    };
    let mut links = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).expect("read doc");
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')').expect("closing parenthesis")];
            if target.starts_with("http") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("folder").join(file)
            };
            assert!(file.exists(), "{}: {target}: no such file", doc.display());
            if !fragment.is_empty() {
                assert!(
                    headings(&file).iter().any(|h| h == fragment),
                    "{}: {target}: no such heading",
                    doc.display()
                );
            }
            links += 1;
        }
    }
    assert!(links >= 10, "only {links} links found");
}
