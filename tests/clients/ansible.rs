//! Ansible through the jump host, the two recipes the README gives: the
//! OpenSSH connection plugin with `ProxyJump` in `ansible_ssh_common_args`
//! (the code from an askpass helper, once per ControlPersist connection),
//! and the paramiko plugin with a `proxy_command` riding a ControlMaster
//! to the jump host opened beforehand (the code typed once, there).

use super::jump_to;
use crate::util::{Output, SshClient, Sshd, run, tool};

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
    let recap = out
        .stdout()
        .lines()
        .find(|l| l.starts_with("target"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no recap line: {out}"));
    assert!(recap.contains("ok=4"), "{recap}\n{out}");
    assert!(recap.contains("failed=0"), "{recap}\n{out}");
}

#[test]
fn ansible_with_the_openssh_plugin_and_proxyjump() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let (g, _secret) = jump_to(&sshd, &mut client);
    let common = format!(
        "ansible_ssh_common_args='-F {} -o ProxyJump=jump'",
        client.config.display()
    );
    let (out, written) = playbook(&client, &sshd, "openssh", &common);
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
