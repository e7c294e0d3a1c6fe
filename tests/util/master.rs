//! An OpenSSH ControlMaster to the alias `jump`, started by hand: one SSH
//! connection that later `ssh -W` runs ride (`-o ControlPath`, BatchMode:
//! never a login of their own). Tools that read `ssh_config` themselves
//! (Ansible, scp) get theirs from [`SshClient::share_connection`] instead.
//! Must not judge what the master sees: the tests do.

use std::process::Command;

use super::{Output, SshClient, Terminal, eventually, run};

impl SshClient {
    /// `ControlPath=...`: the master's socket, in this client's folder.
    pub fn control_option(&self) -> String {
        format!("ControlPath={}", self.dir().join("cm").display())
    }

    /// A ControlMaster connection to `jump` with no session and no tunnel
    /// (`-N`) and `options` (`-o` values) of its own, in the foreground so
    /// the test sees it end; returns once `ssh -O check` finds it up.
    pub fn master(&self, options: &[&str]) -> Terminal {
        let mut cmd = self.ssh();
        cmd.args(["-o", "ControlMaster=yes", "-o", &self.control_option()]);
        for option in options {
            cmd.args(["-o", option]);
        }
        cmd.args(["-N", "jump"]);
        let master = Terminal::start(&mut cmd);
        eventually("the ControlMaster is up", || {
            self.check_master().status.success()
        });
        master
    }

    /// `ssh -O check`: is the master still there?
    pub fn check_master(&self) -> Output {
        self.control("check")
    }

    /// `ssh -O exit`: the master closes its connection and ends.
    pub fn exit_master(&self) -> Output {
        self.control("exit")
    }

    fn control(&self, op: &str) -> Output {
        run(
            self.ssh()
                .args(["-o", &self.control_option(), "-O", op, "jump"]),
            b"",
        )
    }

    /// `ssh -W TO jump` riding the master (BatchMode: never a login of its
    /// own).
    pub fn via_master(&self, to: &str) -> Command {
        let mut cmd = self.ssh();
        cmd.args(["-o", "BatchMode=yes", "-o", &self.control_option()])
            .args(["-W", to, "jump"]);
        cmd
    }
}
