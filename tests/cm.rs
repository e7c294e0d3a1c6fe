//! The Salt formula (packaging/salt/gatehouse) and the Ansible role
//! (packaging/ansible/roles/gatehouse) applied by the real tools,
//! `salt-call --local` and `ansible-playbook -c local`, to a config folder
//! a real `gatehouse run` serves: the first apply writes what it serves (a
//! TOTP secret named relatively included), a second changes nothing, a bad
//! pillar is refused with gatehouse's file:line:col and the file kept, a
//! user removed loses their live session (and their secret file, set to
//! null), a record added answers at once.
//! Every test runs once per tool. The service is not managed here (no
//! systemd): gatehouse reloads by itself when its file changes.
//!
//! Only the settings are built here (as JSON, which both tools read as
//! YAML); the YAML gatehouse reads is what the formula and the role render.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

use crate::{
    defence::{closed, cut_off, live_tunnel, ping},
    jump::{loopback, tunnel},
    util::{Gatehouse, Output, SshClient, TcpServer, dig, gatehouse, gatehouse_bin, run, tool},
};

/// sean's TOTP secret, written by the tools as `sean.totp` beside the config.
const SEAN_TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// The Salt release `tests/run` installs (the 3006 LTS).
const SALT: &str = "3006.16";

/// What gatehouse says about the bad grant of [`bad_pillar`] (after its file:line:col).
const PREFIX_33: &str =
    ": jump.groups.dev.allow[0]: \"10.77.0.0/33:22\": prefix length must be at most 32";

#[derive(Clone, Copy, Debug)]
enum Tool {
    Salt,
    Ansible,
}

/// One run of a tool: what it printed, and how many states or tasks
/// changed something.
struct Applied {
    out: Output,
    changed: usize,
}

impl Applied {
    /// Everything it printed, stdout then stderr.
    fn text(&self) -> String {
        format!("{}\n{}", self.out.stdout(), self.out.stderr)
    }
}

/// A tool with its own working folder (minion config, pillar, playbook).
struct Cm {
    tool: Tool,
    work: tempfile::TempDir,
}

impl Cm {
    fn new(tool: Tool) -> Cm {
        Cm {
            tool,
            work: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Apply the formula or role with `settings` (the interface of both,
    /// without Ansible's `gatehouse_` prefix).
    fn apply(&self, settings: &Value) -> Applied {
        match self.tool {
            Tool::Salt => self.salt(settings),
            Tool::Ansible => self.ansible(settings),
        }
    }

    /// `salt-call --local state.apply gatehouse` with the pillar
    /// `gatehouse: SETTINGS`, nothing read from or written to /etc/salt.
    fn salt(&self, settings: &Value) -> Applied {
        let work = self.work.path();
        let formulas = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/salt");
        for dir in ["etc", "pillar"] {
            std::fs::create_dir_all(work.join(dir)).expect("mkdir");
        }
        let minion = json!({
            "file_client": "local",
            "root_dir": work.join("root"),
            "file_roots": { "base": [formulas] },
            "pillar_roots": { "base": [work.join("pillar")] },
        });
        std::fs::write(work.join("etc/minion"), minion.to_string()).expect("write minion");
        // The pillar.example test puts an `example` first: `gatehouse` is
        // merged over it, as a site's own pillar is.
        let top = if work.join("pillar/example.sls").exists() {
            "base: { '*': [example, gatehouse] }\n"
        } else {
            "base: { '*': [gatehouse] }\n"
        };
        std::fs::write(work.join("pillar/top.sls"), top).expect("write top.sls");
        let pillar = json!({ "gatehouse": settings });
        std::fs::write(work.join("pillar/gatehouse.sls"), pillar.to_string())
            .expect("write pillar");
        let out = run(
            std::process::Command::new(salt_call())
                .arg("--local")
                .arg("--config-dir")
                .arg(work.join("etc"))
                .args(["--out=json", "--retcode-passthrough"])
                .args(["state.apply", "gatehouse"]),
            b"",
        );
        // {"local": {STATE: {"changes": {...}, ...}}}; a pillar or render
        // error is a list of strings instead: nothing changed.
        let states: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let changed = states["local"]
            .as_object()
            .map(|states| {
                states
                    .values()
                    .filter(|s| s["changes"].as_object().is_some_and(|c| !c.is_empty()))
                    .count()
            })
            .unwrap_or(0);
        Applied { out, changed }
    }

    /// `ansible-playbook -c local` of a play with the role, the settings as
    /// extra vars named `gatehouse_KEY`.
    fn ansible(&self, settings: &Value) -> Applied {
        let work = self.work.path();
        let vars: serde_json::Map<String, Value> = settings
            .as_object()
            .expect("settings are a mapping")
            .iter()
            .map(|(key, value)| (format!("gatehouse_{key}"), value.clone()))
            .collect();
        std::fs::write(work.join("vars.json"), Value::Object(vars).to_string())
            .expect("write vars");
        std::fs::write(
            work.join("site.yml"),
            "- hosts: localhost\n  gather_facts: false\n  roles: [gatehouse]\n",
        )
        .expect("write playbook");
        let python = run(
            tool("python3").args(["-c", "import sys; print(sys.executable)"]),
            b"",
        );
        python.success();
        let out = run(
            tool("ansible-playbook")
                .current_dir(work)
                .env(
                    "ANSIBLE_ROLES_PATH",
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/ansible/roles"),
                )
                .env("ANSIBLE_CONFIG", work.join("none.cfg"))
                .env("ANSIBLE_HOME", work.join("home"))
                .env("ANSIBLE_LOCAL_TEMP", work.join("local-tmp"))
                .env("ANSIBLE_REMOTE_TEMP", work.join("remote-tmp"))
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
                .env("ANSIBLE_LOCALHOST_WARNING", "False")
                .args(["-c", "local", "-i", "localhost,"])
                .arg("-e")
                .arg(format!(
                    "ansible_python_interpreter={}",
                    python.stdout().trim()
                ))
                .args(["-e", "@vars.json", "site.yml"]),
            b"",
        );
        let recap = out
            .stdout()
            .lines()
            .find(|l| l.starts_with("localhost") && l.contains("changed="))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no play recap: {out}"));
        let changed = recap
            .split_whitespace()
            .find_map(|w| w.strip_prefix("changed="))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no changed= in the recap {recap:?}"));
        Applied { out, changed }
    }
}

/// salt-call from `GATEHOUSE_SALT_CALL`, else where `tests/run` installs it.
fn salt_call() -> PathBuf {
    let path = match std::env::var_os("GATEHOUSE_SALT_CALL") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .expect("neither XDG_CACHE_HOME nor HOME is set")
            .join(format!("gatehouse-tests/salt-{SALT}/bin/salt-call")),
    };
    assert!(
        path.is_file(),
        "Salt {SALT} is not installed at {}; run `tests/run` (it installs it in a venv there)",
        path.display()
    );
    path
}

/// `id FLAG` (-un, -gn): the files are owned by whoever runs the tests.
fn id(flag: &str) -> String {
    let out = run(tool("id").arg(flag), b"");
    out.success();
    out.stdout().trim().to_owned()
}

/// The formula's and role's settings: `config` written at `path` by the
/// current user, sean's TOTP secret beside it, package and service left alone.
fn settings(path: &Path, config: Value) -> Value {
    json!({
        "config_path": path,
        "bin": gatehouse_bin(),
        "user": id("-un"),
        "group": id("-gn"),
        "manage_package": false,
        "manage_service": false,
        "secrets": { "sean.totp": SEAN_TOTP },
        "config": config,
    })
}

/// A gatehouse config: `users` (sean with his TOTP secret file, named
/// relatively) in group `dev` allowed `grant`, and zone `sean` with `records`.
fn site(users: &[(&str, &SshClient)], grant: &str, records: &[(&str, &str)]) -> Value {
    let users: serde_json::Map<String, Value> = users
        .iter()
        .map(|(name, client)| {
            let mut user = json!({ "keys": [client.public_key()], "groups": ["dev"] });
            if *name == "sean" {
                user["totp_secret_file"] = json!("sean.totp");
            }
            ((*name).to_owned(), user)
        })
        .collect();
    let records: serde_json::Map<String, Value> = records
        .iter()
        .map(|(name, ip)| ((*name).to_owned(), json!(ip)))
        .collect();
    json!({
        "state_dir": "state",
        "log": { "format": "json" },
        "jump": {
            "listen": ["127.0.0.1:0"],
            "mfa": "optional",
            "users": users,
            "groups": { "dev": { "allow": [grant] } },
        },
        "dns": {
            "listen": ["127.0.0.1:0"],
            "zones": { "sean": { "records": records } },
        },
    })
}

/// The A records gatehouse answers for `name`.
fn a(g: &Gatehouse, name: &str) -> Vec<String> {
    let answer = dig(g.dns(), &[name, "A"]);
    assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
    answer
        .answer_data()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

/// How many successful reloads gatehouse has logged so far.
fn reloads(g: &Gatehouse) -> usize {
    g.events()
        .iter()
        .filter(|v| v["event"] == "reload" && v["result"] == "ok")
        .count()
}

/// Wait for the first successful reload after the first `before`.
fn reloaded(g: &Gatehouse, before: usize) {
    g.wait_for_nth(before, |v| v["event"] == "reload" && v["result"] == "ok");
}

/// `text` holds `PATH:LINE:COLUMN` + [`PREFIX_33`] for a YAML file `PATH`
/// (Ansible prints it inside a JSON string: its quotes escaped).
fn located_prefix_error(text: &str) -> bool {
    let escaped = PREFIX_33.replace('"', "\\\"");
    let found = text.match_indices(PREFIX_33);
    found.chain(text.match_indices(&escaped)).any(|(at, _)| {
        let mut parts = text[..at].rsplitn(3, ':');
        let column = parts.next().unwrap_or("");
        let line = parts.next().unwrap_or("");
        let file = parts.next().unwrap_or("");
        [line, column]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && (file.ends_with(".yaml") || file.ends_with(".yaml.staged"))
    })
}

fn first_apply_serves_a_second_changes_nothing_and_a_bad_pillar_is_refused(tool: Tool) {
    let cm = Cm::new(tool);
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let grant = format!("127.0.0.0/8:{}", echo.port());
    let mut sean = SshClient::new();
    let records = [("saxophone", "192.168.222.16")];
    let conf = tempfile::tempdir().expect("tempdir");
    let path = conf.path().join("gatehouse.yaml");

    let first = cm.apply(&settings(&path, site(&[("sean", &sean)], &grant, &records)));
    first.out.success();
    assert!(
        first.changed >= 2,
        "secret and config written: {}",
        first.out
    );
    assert_eq!(mode(&path), 0o640, "{}", first.out);
    let secret = conf.path().join("sean.totp");
    assert_eq!(mode(&secret), 0o600, "{}", first.out);
    assert!(
        !first.text().contains(SEAN_TOTP),
        "the secret is in the output: {}",
        first.out
    );

    // What was written is what gatehouse serves; sean's code comes from the
    // secret file the config names relatively.
    let g = Gatehouse::start_written(conf, path.clone());
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    sean.add_host("jump", g.jump(), "sean");
    // Two logins in this test, each with a step of its own (a code is accepted once).
    sean.answer_with_totp_ahead(SEAN_TOTP);
    let through = tunnel(&sean, &to, b"hello\n");
    assert_eq!(through.success().stdout(), "hello\n");
    assert_eq!(
        sean.prompts().len(),
        1,
        "one code asked: {:?}",
        sean.prompts()
    );

    let second = cm.apply(&settings(&path, site(&[("sean", &sean)], &grant, &records)));
    second.out.success();
    assert_eq!(
        second.changed, 0,
        "a second run changes nothing: {}",
        second.out
    );

    // A /33 in a grant: the run fails naming file, line and column; the
    // file in force is not touched and gatehouse serves it still.
    let before = std::fs::read(&path).expect("read config");
    let mtime = std::fs::metadata(&path)
        .expect("stat")
        .modified()
        .expect("mtime");
    let bad = cm.apply(&settings(
        &path,
        site(&[("sean", &sean)], "10.77.0.0/33:22", &records),
    ));
    bad.out.failure();
    assert!(
        located_prefix_error(&bad.text()),
        "no file:line:col{PREFIX_33} in: {}",
        bad.out
    );
    assert_eq!(std::fs::read(&path).expect("read config"), before);
    assert_eq!(
        std::fs::metadata(&path)
            .expect("stat")
            .modified()
            .expect("mtime"),
        mtime
    );
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    let through = tunnel(&sean, &to, b"still\n");
    assert_eq!(through.success().stdout(), "still\n");
    assert_eq!(sean.prompts().len(), 2, "{:?}", sean.prompts());
}

fn removing_a_user_cuts_their_session_and_a_record_added_answers_at_once(tool: Tool) {
    let cm = Cm::new(tool);
    let echo = TcpServer::echo();
    let to = loopback(echo.port());
    let grant = format!("127.0.0.0/8:{}", echo.port());
    let mut sean = SshClient::new();
    let mut kim = SshClient::new();
    let conf = tempfile::tempdir().expect("tempdir");
    let path = conf.path().join("gatehouse.yaml");
    let both = [("sean", &sean), ("kim", &kim)];
    let records = vec![("saxophone", "192.168.222.16")];
    cm.apply(&settings(&path, site(&both, &grant, &records)))
        .out
        .success();

    let g = Gatehouse::start_written(conf, path.clone());
    sean.add_host("jump", g.jump(), "sean");
    sean.answer_with_totp(SEAN_TOTP);
    kim.add_host("jump", g.jump(), "kim");
    let (sean_t, sean_conn) = live_tunnel(&g, &sean, &to);
    let (mut kim_t, kim_conn) = live_tunnel(&g, &kim, &to);

    // Offboarding: sean leaves the pillar and his secret is set to null;
    // his tunnel is cut, kim's stays, the secret file is gone.
    let secret = path.with_file_name("sean.totp");
    assert!(secret.exists());
    let mut without_sean = settings(&path, site(&[("kim", &kim)], &grant, &records));
    without_sean["secrets"]["sean.totp"] = Value::Null;
    let off = cm.apply(&without_sean);
    off.out.success();
    assert!(off.changed >= 2, "config and secret: {}", off.out);
    assert!(!secret.exists(), "{}", off.out);
    let cut = g.audit("offboarded", |v| v["user"] == "sean");
    assert_eq!(
        cut["reason"], "user removed from the configuration",
        "{cut}"
    );
    assert_eq!(cut["conn"], sean_conn, "{cut}");
    closed(&g, &sean_conn);
    cut_off(sean_t);
    ping(&mut kim_t, "kim still here");

    // An app VM's name: answered once gatehouse has reloaded the file.
    let before = reloads(&g);
    let mut more = records.clone();
    more.push(("trumpet", "192.168.222.17"));
    let mut with_trumpet = settings(&path, site(&[("kim", &kim)], &grant, &more));
    with_trumpet["secrets"]["sean.totp"] = Value::Null;
    let added = cm.apply(&with_trumpet);
    added.out.success();
    reloaded(&g, before);
    assert_eq!(a(&g, "trumpet.sean"), ["192.168.222.17"]);

    ping(&mut kim_t, "kim after the record");
    assert!(
        g.audits("connection_closed")
            .iter()
            .all(|v| v["conn"] != kim_conn),
        "kim's session was not cut"
    );
    assert_eq!(
        g.audits("offboarded").len(),
        1,
        "{:?}",
        g.audits("offboarded")
    );
    kim_t.close_stdin();
    kim_t.finish().success();
}

/// The formula's pillar.example, with only where to write and the binary
/// changed, is a config `gatehouse check` accepts (its secret included).
#[test]
fn salt_pillar_example_is_a_config_gatehouse_accepts() {
    let cm = Cm::new(Tool::Salt);
    let pillar = cm.work.path().join("pillar");
    std::fs::create_dir_all(&pillar).expect("mkdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/salt/pillar.example");
    std::fs::copy(example, pillar.join("example.sls")).expect("copy pillar.example");
    let conf = tempfile::tempdir().expect("tempdir");
    let path = conf.path().join("gatehouse.yaml");
    let mut here = settings(&path, Value::Null);
    let here_only = here.as_object_mut().expect("a mapping");
    here_only.remove("config");
    here_only.remove("secrets");

    let applied = cm.apply(&here);
    applied.out.success();
    assert_eq!(applied.changed, 2, "secret and config: {}", applied.out);
    let check = gatehouse(
        &["check", "--config", path.to_str().expect("UTF-8 path")],
        conf.path(),
    );
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{summary}");
    assert!(
        summary.contains("user sean: 1 keys, groups [dev]"),
        "{summary}"
    );
    assert!(summary.contains("zone sean: saxophone.sean"), "{summary}");
}

#[test]
fn salt_first_apply_serves_a_second_changes_nothing_and_a_bad_pillar_is_refused() {
    first_apply_serves_a_second_changes_nothing_and_a_bad_pillar_is_refused(Tool::Salt);
}

#[test]
fn ansible_first_apply_serves_a_second_changes_nothing_and_bad_vars_are_refused() {
    first_apply_serves_a_second_changes_nothing_and_a_bad_pillar_is_refused(Tool::Ansible);
}

#[test]
fn salt_removing_a_user_cuts_their_session_and_a_record_added_answers_at_once() {
    removing_a_user_cuts_their_session_and_a_record_added_answers_at_once(Tool::Salt);
}

#[test]
fn ansible_removing_a_user_cuts_their_session_and_a_record_added_answers_at_once() {
    removing_a_user_cuts_their_session_and_a_record_added_answers_at_once(Tool::Ansible);
}
