//! The Python clients in `tests/clients/`: [`python_client`] is the command
//! that runs one, [`ssh_clients`] the arguments `ssh_clients.py` takes for a
//! login through gatehouse to a target. Must not judge what they print: the
//! tests do.

use std::{path::Path, process::Command};

use super::{Gatehouse, SshClient, Sshd, run, tool};

/// `python3 tests/clients/SCRIPT`.
pub fn python_client(script: &str) -> Command {
    let mut cmd = tool("python3");
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/clients")
            .join(script),
    );
    cmd
}

/// Tell the client script with process id `pid` to go on (SIGUSR1:
/// `ssh_attack.py` signs, or stops holding, on it).
pub fn go_on(pid: u32) {
    run(tool("kill").args(["-USR1", &pid.to_string()]), b"").success();
}

/// `python3 tests/clients/ssh_clients.py LIBRARY`: `user` logs in to `g`
/// with `client`'s key and codes from the TOTP `secret`, then to `sshd`.
pub fn ssh_clients(
    library: &str,
    g: &Gatehouse,
    user: &str,
    client: &SshClient,
    secret: &str,
    sshd: &Sshd,
) -> Command {
    let mut cmd = python_client("ssh_clients.py");
    cmd.arg(library)
        .args(["--port", &g.jump().port().to_string(), "--user", user])
        .arg("--key")
        .arg(&client.key)
        .args(["--secret", secret, "--target", &sshd.addr.to_string()])
        .args(["--target-user", &sshd.user]);
    cmd
}
