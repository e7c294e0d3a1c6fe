//! Ansible through the jump host, the two recipes docs/laptop.md gives: the
//! OpenSSH connection plugin with `ProxyJump` in `ansible_ssh_common_args`
//! (the code from an askpass helper, once per ControlPersist connection),
//! and the paramiko plugin with a `proxy_command` riding a ControlMaster
//! to the jump host opened beforehand (the code typed once, there). And
//! one wrong askpass answer: one failure with the recipe's
//! `NumberOfPasswordPrompts 1`; with OpenSSH's default of 3, the user
//! locked and the source banned until `gatehouse bans lift`.

use super::jump_to;
use crate::util::{Gatehouse, Output, SshClient, Sshd, gatehouse, run, tool};

/// The playbook: ping, a command and a file written on the target.
const PLAYBOOK: &str = "\
- hosts: internal
  gather_facts: false
  tasks:
    - ansible.builtin.ping:
    - ansible.builtin.command: echo hello-from-ansible
      register: said
    - ansible.builtin.assert:
        that: said.stdout == 'hello-from-ansible'
    - ansible.builtin.copy:
        content: \"written by ansible\\n\"
        dest: \"{{ out }}\"
";

/// `ansible-playbook` with `vars` for the host `target` (the sshd), in a
/// folder of its own under `client`'s, with the client's askpass.
fn playbook(client: &SshClient, sshd: &Sshd, name: &str, vars: &str) -> (Output, String) {
    let dir = client.dir().join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    let out = dir.join("written.txt");
    let python = run(
        tool("python3").args(["-c", "import sys; print(sys.executable)"]),
        b"",
    );
    python.success();
    let inventory = format!(
        "[internal]\ntarget ansible_host={} ansible_port={} ansible_user={} \
         ansible_python_interpreter={} out={} {vars}\n",
        sshd.addr.ip(),
        sshd.addr.port(),
        sshd.user,
        python.stdout().trim(),
        out.display(),
    );
    std::fs::write(dir.join("inventory"), inventory).expect("write inventory");
    std::fs::write(dir.join("site.yml"), PLAYBOOK).expect("write playbook");
    let run_it = run(
        client
            .with_env("ansible-playbook")
            .current_dir(&dir)
            .env("ANSIBLE_CONFIG", dir.join("none.cfg"))
            .env("ANSIBLE_HOME", dir.join("home"))
            .env("ANSIBLE_LOCAL_TEMP", dir.join("local-tmp"))
            .env("ANSIBLE_REMOTE_TEMP", dir.join("remote-tmp"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", dir.join("cp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_PARAMIKO_LOOK_FOR_KEYS", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
            .args(["-i", "inventory", "site.yml"]),
        b"",
    );
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    (run_it, written)
}

/// The recap shows all four tasks ok on `target`, nothing failed.
fn all_ok(out: &Output) {
    out.success();
    let recap = recap(out);
    assert!(recap.contains("ok=4"), "{recap}\n{out}");
    assert!(recap.contains("failed=0"), "{recap}\n{out}");
}

#[test]
fn ansible_with_the_openssh_plugin_and_proxyjump() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, _secret) = jump_to(&sshd, &mut client);
    let (out, written) = playbook(&client, &sshd, "openssh", &proxyjump_args(&client.config));
    all_ok(&out);
    assert_eq!(written, "written by ansible\n", "{out}");
    // ControlPersist: every task over one connection, one code.
    let codes: Vec<_> = g
        .audits("auth")
        .into_iter()
        .filter(|v| v["method"] == "keyboard-interactive" && v["result"] == "accepted")
        .collect();
    assert_eq!(codes.len(), 1, "{codes:?}");
    g.audit("tunnel_opened", |v| v["dialled"] == sshd.addr.to_string());
}

#[test]
fn ansible_with_the_paramiko_plugin_over_a_controlmaster() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, _secret) = jump_to(&sshd, &mut client);
    client.share_connection("jump");
    // The user opens the shared connection (typing the code once) ...
    run(client.ssh().args(["-f", "-N", "jump"]), b"").success();
    // ... and Ansible's proxy command rides it: no code asked again.
    client.answer_with("000000");
    let vars = format!(
        "ansible_connection=paramiko ansible_ssh_private_key_file={} \
         ansible_paramiko_proxy_command='ssh -F {} -W %h:%p jump'",
        client.key.display(),
        client.config.display()
    );
    let (out, written) = playbook(&client, &sshd, "paramiko", &vars);
    all_ok(&out);
    assert_eq!(written, "written by ansible\n", "{out}");
    let codes: Vec<_> = g
        .audits("auth")
        .into_iter()
        .filter(|v| v["method"] == "keyboard-interactive")
        .collect();
    assert_eq!(codes.len(), 1, "{codes:?}");
    assert_eq!(codes[0]["result"], "accepted", "{codes:?}");
    g.audit("tunnel_opened", |v| v["dialled"] == sshd.addr.to_string());
}

/// `mfa_grace` (issue 28) for automation that cannot hold a ControlMaster:
/// the paramiko plugin with a plain `proxy_command` (a new jump connection
/// each run) asks a code once; the next run, its askpass answering only a
/// wrong code, needs none (same key, same source, within the grace).
#[test]
fn ansible_with_the_paramiko_plugin_and_an_mfa_grace_types_one_code() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let g = Gatehouse::start(&crate::grace::yaml(
        &[("sean", &[&client], "dev")],
        &[sshd.addr.port()],
    ));
    client.add_host("jump", g.jump(), "sean");
    let secret = g.enroll("sean");
    client.answer_with_totp(&secret);
    let vars = format!(
        "ansible_connection=paramiko ansible_ssh_private_key_file={} \
         ansible_paramiko_proxy_command='ssh -F {} -W %h:%p jump'",
        client.key.display(),
        client.config.display()
    );
    let (out, written) = playbook(&client, &sshd, "first", &vars);
    all_ok(&out);
    assert_eq!(written, "written by ansible\n", "{out}");
    assert_eq!(client.prompts().len(), 1, "{:?}", client.prompts());
    // No code helper after the first: a wrong code would be refused.
    client.answer_with("000000");
    let (out, written) = playbook(&client, &sshd, "second", &vars);
    all_ok(&out);
    assert_eq!(written, "written by ansible\n", "{out}");
    assert_eq!(client.prompts().len(), 1, "{:?}", client.prompts());
    assert_eq!(code_results(&g), ["accepted"]);
    g.audit("auth", |v| v["user"] == "sean" && v["grace_step"].is_u64());
}

/// `ansible_ssh_common_args` for the OpenSSH plugin through `jump`, with
/// the ssh config `config`.
fn proxyjump_args(config: &std::path::Path) -> String {
    format!(
        "ansible_ssh_common_args='-F {} -o ProxyJump=jump'",
        config.display()
    )
}

/// The keyboard-interactive `auth` results so far, in order.
fn code_results(g: &Gatehouse) -> Vec<String> {
    g.audits("auth")
        .into_iter()
        .filter(|v| v["method"] == "keyboard-interactive")
        .map(|v| v["result"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The recap line for `target`.
fn recap(out: &Output) -> String {
    out.stdout()
        .lines()
        .find(|l| l.starts_with("target"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no recap line: {out}"))
}

/// The recipe (`NumberOfPasswordPrompts 1` for the jump host, as the
/// harness's ssh config has): a wrong answer from askpass is one refused
/// code, one failure (Ansible says only `UNREACHABLE`; `ssh -J` by hand
/// says `Permission denied`); the next run with the right code works,
/// nothing locked or banned.
#[test]
fn ansible_a_wrong_code_with_the_recipe_is_one_failure_and_the_next_run_works() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, secret) = jump_to(&sshd, &mut client);
    client.answer_with("000000");
    let (out, _) = playbook(&client, &sshd, "wrong", &proxyjump_args(&client.config));
    assert!(recap(&out).contains("unreachable=1"), "{out}");
    assert_eq!(
        code_results(&g),
        ["rejected"],
        "one code asked, one refused"
    );
    println!("Ansible, a wrong code:\n{}", out.stdout());
    // By hand, ssh says which it was.
    let by_hand = run(client.ssh().args(["-J", "jump", "target", "true"]), b"");
    by_hand
        .failure()
        .stderr_has("Permission denied (keyboard-interactive)");
    println!("ssh -J by hand, a wrong code:\n{}", by_hand.stderr);
    assert_eq!(code_results(&g), ["rejected", "rejected"]);
    client.answer_with_totp(&secret);
    let (out, written) = playbook(&client, &sshd, "right", &proxyjump_args(&client.config));
    all_ok(&out);
    assert_eq!(written, "written by ansible\n", "{out}");
    assert_eq!(code_results(&g), ["rejected", "rejected", "accepted"]);
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));
}

/// Without `NumberOfPasswordPrompts 1`, OpenSSH asks askpass 3 times and
/// sends the same wrong code thrice: the user's 3 wrong codes in 30 s are
/// used up, the next run's right code is refused unchecked and the source
/// is banned at its 5th failure. `gatehouse bans lift` lets it in again.
#[test]
fn ansible_without_the_recipe_one_wrong_answer_locks_and_bans_until_lifted() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, secret) = jump_to(&sshd, &mut client);
    // The ssh config a user starts with: OpenSSH's default of 3 prompts.
    let text = std::fs::read_to_string(&client.config).expect("ssh config");
    assert!(text.contains("  NumberOfPasswordPrompts 1\n"), "{text}");
    let default = client.dir().join("ssh_config_default_prompts");
    std::fs::write(&default, text.replace("  NumberOfPasswordPrompts 1\n", ""))
        .expect("write ssh config");
    client.answer_with("000000");
    let (out, _) = playbook(&client, &sshd, "wrong", &proxyjump_args(&default));
    assert!(recap(&out).contains("unreachable=1"), "{out}");
    assert_eq!(code_results(&g), ["rejected", "rejected", "rejected"]);
    // The right code at once: refused unchecked (the per-user limit), three
    // times; the fifth failure bans the source, and Ansible's retry of the
    // connection meets the ban (what it prints: `kex_exchange_identification`).
    client.answer_with_totp(&secret);
    let (out, _) = playbook(&client, &sshd, "right", &proxyjump_args(&default));
    assert!(recap(&out).contains("unreachable=1"), "{out}");
    println!("what Ansible printed for the right code:\n{}", out.stdout());
    g.audit("auth", |v| {
        v["method"] == "keyboard-interactive"
            && v["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("per-user code limit"))
    });
    assert!(!code_results(&g).contains(&"accepted".to_owned()));
    g.audit("ban", |v| v["source"] == "127.0.0.1");
    // Banned: closed before the identification string.
    let refused = run(
        client
            .ssh()
            .args(["-o", "ConnectTimeout=5", "jump", "true"]),
        b"",
    );
    refused.failure().stderr_has("kex_exchange_identification");
    println!("ssh while banned: {}", refused.stderr.trim());
    let config = g.config.to_str().expect("UTF-8 path");
    let lifted = gatehouse(
        &["bans", "lift", "127.0.0.1", "--config", config],
        g.dir.path(),
    );
    assert!(lifted.status.success(), "{lifted:?}");
    println!("{}", String::from_utf8_lossy(&lifted.stdout).trim());
    g.audit("ban_lifted", |_| true);
}

/// A port not granted: Ansible says `UNREACHABLE` as for a wrong code, but
/// ssh's own words differ (`Session open refused by peer` through the
/// ControlMaster, not `Permission denied`), and the audit line says which
/// it was.
#[test]
fn ansible_a_port_not_granted_is_told_apart_from_a_wrong_code() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let g = Gatehouse::start(&crate::jump::config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec!["127.0.0.1:1".to_owned()])],
    ));
    client.add_host("jump", g.jump(), "sean");
    client.add_host("target", sshd.addr, &sshd.user);
    // The recipe's ControlMaster for the jump host: one code, then every
    // connection rides it (the by-hand `ssh -J` below too).
    client.share_connection("jump");
    client.answer_with_totp(&g.enroll("sean"));
    let (out, _) = playbook(&client, &sshd, "ungranted", &proxyjump_args(&client.config));
    assert!(recap(&out).contains("unreachable=1"), "{out}");
    println!("Ansible, a port not granted:\n{}", out.stdout());
    let by_hand = run(client.ssh().args(["-J", "jump", "target", "true"]), b"");
    by_hand.failure().stderr_has("Session open refused by peer");
    println!("ssh -J by hand, a port not granted:\n{}", by_hand.stderr);
    let line = g.audit("tunnel_refused", |v| v["port"] == sshd.addr.port());
    println!("the audit line: {line}");
}
