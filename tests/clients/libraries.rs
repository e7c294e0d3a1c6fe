//! SSH client libraries nobody here wrote, as a new user would try them
//! (issue 25): Go's `golang.org/x/crypto/ssh` (Terraform's and Packer's
//! bastion client, `go_client/main.go`), Node's `ssh2` (`node_client.js`),
//! libssh2 and libssh by their PyPI bindings (`ssh_libraries.py`). Each
//! logs in with key + code through keyboard-interactive, pushes 1 MiB
//! through a granted tunnel and back, is refused a port it was not
//! granted, and is refused a wrong code: asserted in the client's own
//! words and in the audit. Builds the Go client once per run into
//! target/; installs nothing (`tests/run` does) and skips nothing: a
//! missing toolchain or package fails the test.

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use rand::RngCore;
use serde_json::Value;

use super::said;
use crate::{
    jump::{code_at, config, field},
    util::{Gatehouse, Output, SshClient, TcpServer, python_client, run, tool},
};

/// The bytes pushed through each tunnel and back.
const PAYLOAD: usize = 1 << 20;

/// The npm `ssh2` version `tests/run` installs; its cache is keyed by it.
const NODE_SSH2: &str = "1.17.0";

/// A jump host granting `sean` (key + code, enrolled) an echo server and
/// nothing else; a listener on the port it does not grant (the refusal is
/// policy, not a failed connect); 1 MiB of random bytes to send.
struct Bench {
    g: Gatehouse,
    client: SshClient,
    secret: String,
    echo: TcpServer,
    other: TcpServer,
    data: Vec<u8>,
}

impl Bench {
    fn new() -> Bench {
        let client = SshClient::new();
        let echo = TcpServer::echo();
        let other = TcpServer::banner("SSH-2.0-not-for-you\r\n");
        let g = Gatehouse::start(&config(
            "required",
            &[("sean", &client, &["dev"])],
            &[("dev", vec![format!("127.0.0.0/8:{}", echo.port())])],
        ));
        let secret = g.enroll("sean");
        let mut data = vec![0; PAYLOAD];
        rand::rng().fill_bytes(&mut data);
        std::fs::write(client.dir().join("data"), &data).expect("write data");
        Bench {
            g,
            client,
            secret,
            echo,
            other,
            data,
        }
    }

    /// `cmd` with the arguments every client takes: the jump host, the
    /// key, the current code and a wrong one, the two destinations, the
    /// data file and where to write what came back.
    fn drive(&self, cmd: &mut Command) -> Output {
        let code = code_at(&self.secret, "now");
        let wrong = wrong(&code);
        let dir = self.client.dir();
        run(
            cmd.args([
                "--port",
                &self.g.jump().port().to_string(),
                "--user",
                "sean",
            ])
            .arg("--key")
            .arg(&self.client.key)
            .args(["--code", &code, "--wrong-code", &wrong])
            .args(["--echo", &format!("127.0.0.1:{}", self.echo.port())])
            .args(["--refused", &format!("127.0.0.1:{}", self.other.port())])
            .arg("--data")
            .arg(dir.join("data"))
            .arg("--out")
            .arg(dir.join("back")),
            b"",
        )
    }

    /// What every client must show, in its own words and in the audit:
    /// the jump host's own key on both connections; logged in on the code
    /// prompt; the 1 MiB back whole through the gatehouse; the ungranted
    /// port refused in words holding each of `refused` and audited as not
    /// granted; the wrong code refused with `wrong_code`, audited.
    fn check(&self, out: &Output, refused: &[&str], wrong_code: &str) {
        out.success();
        let text = out.stdout();
        let generated = self.g.wait_for(|v| v["event"] == "host_key_generated");
        let host_key = generated["fingerprint"].as_str().unwrap_or_default();
        assert_eq!(all_said(&text, "host key"), [host_key, host_key], "{out}");
        // (a) The right code, then (d) the wrong one: the same prompt.
        assert_eq!(
            all_said(&text, "prompt"),
            ["Verification code:", "Verification code:"],
            "{out}"
        );
        assert_eq!(said(&text, "after code"), Some("authenticated"), "{out}");
        // Per connection, in order: the key's partial success, then the
        // code's verdict; nothing else (no `none` probe is an attempt).
        let rejected = self.g.audit("auth", |v| v["result"] == "rejected");
        assert_eq!(rejected["detail"], "wrong code", "{rejected}");
        let mut steps: Vec<(Value, Vec<String>)> = Vec::new();
        for v in self.g.audits("auth") {
            assert_eq!(v["user"], "sean", "{v}");
            let step = format!("{} {}", field(&v, "method"), field(&v, "result"));
            match steps.iter_mut().find(|(conn, _)| *conn == v["conn"]) {
                Some((_, seen)) => seen.push(step),
                None => steps.push((v["conn"].clone(), vec![step])),
            }
        }
        let steps: Vec<Vec<String>> = steps.into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            steps,
            [
                ["publickey partial", "keyboard-interactive accepted"],
                ["publickey partial", "keyboard-interactive rejected"],
            ],
            "{out}"
        );

        // (b) 1 MiB through the granted tunnel and back, byte for byte.
        let back = std::fs::read(self.client.dir().join("back")).expect("read back");
        assert_eq!(back.len(), PAYLOAD, "{out}");
        assert!(back == self.data, "the bytes came back changed\n{out}");
        let echo = format!("127.0.0.1:{}", self.echo.port());
        let opened = self.g.audit("tunnel_opened", |v| v["dialled"] == echo);
        assert_eq!(opened["via"], "direct-tcpip", "{opened}");
        let closed = self.g.audit("tunnel_closed", |v| v["dialled"] == echo);
        assert_eq!(closed["bytes_up"], PAYLOAD, "{closed}");
        assert_eq!(closed["bytes_down"], PAYLOAD, "{closed}");

        // (c) The port not granted: refused as policy, never dialled.
        let words = said(&text, "refused").unwrap_or_default();
        assert!(refused.iter().all(|r| words.contains(r)), "{out}");
        let denied = self.g.audit("tunnel_refused", |_| true);
        assert_eq!(denied["port"], self.other.port(), "{denied}");
        assert_eq!(denied["via"], "direct-tcpip", "{denied}");
        assert_eq!(
            denied["reason"], "not granted: no grant of the user's groups allows it",
            "{denied}"
        );
        assert_eq!(self.g.audits("tunnel_opened").len(), 1);

        // (d) The wrong code, as the client reports it.
        assert_eq!(said(&text, "wrong code"), Some(wrong_code), "{out}");
    }
}

/// Every value of the `key: value` lines `key`, in order.
fn all_said<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .collect()
}

/// `code` with every digit moved by five: never that code, and a code
/// of a neighbouring step only by a one-in-a-million chance.
fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_digit((d + 5) % 10, 10).unwrap_or('0'),
            None => c,
        })
        .collect()
}

/// The Go client, built once per test run (GOPATH mode, offline: Debian's
/// `golang-golang-x-crypto-dev`) into target/, keyed by its source.
fn go_client() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let crypto = Path::new("/usr/share/gocode/src/golang.org/x/crypto/ssh/client.go");
        assert!(
            crypto.is_file(),
            "{} is missing: run `tests/run` (it installs golang-golang-x-crypto-dev)",
            crypto.display()
        );
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/go_client/main.go");
        let text = std::fs::read(&source).expect("read go_client/main.go");
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-clients");
        let binary = dir.join(format!("go-client-{:016x}", hasher.finish()));
        if binary.is_file() {
            return binary;
        }
        std::fs::create_dir_all(dir.join("gopath")).expect("mkdir test-clients");
        let partial = binary.with_extension("partial");
        let gopath = format!("{}:/usr/share/gocode", dir.join("gopath").display());
        run(
            tool("go")
                .current_dir(source.parent().expect("go_client/"))
                .env("GO111MODULE", "off")
                .env("GOPATH", gopath)
                .env("GOCACHE", dir.join("go-cache"))
                .env("GOFLAGS", "")
                .env("GOPROXY", "off")
                .env("CGO_ENABLED", "0")
                .arg("build")
                .arg("-o")
                .arg(&partial)
                .arg("main.go"),
            b"",
        )
        .success();
        std::fs::rename(&partial, &binary).expect("rename go client");
        // Builds of older sources are never used again.
        for entry in std::fs::read_dir(&dir)
            .expect("read test-clients")
            .flatten()
        {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("go-client-") && entry.path() != binary {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        binary
    })
}

/// The `node_modules` holding npm `ssh2` at [`NODE_SSH2`]: where
/// `GATEHOUSE_NODE_SSH2` says, else where `tests/run` puts it.
fn node_modules() -> PathBuf {
    let dir = match std::env::var_os("GATEHOUSE_NODE_SSH2") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .expect("neither XDG_CACHE_HOME nor HOME is set");
            cache.join(format!("gatehouse-tests/npm-ssh2-{NODE_SSH2}"))
        }
    }
    .join("node_modules");
    let manifest = dir.join("ssh2/package.json");
    let version = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    assert_eq!(
        version.as_deref(),
        Some(NODE_SSH2),
        "npm ssh2 {NODE_SSH2} is not at {}: run `tests/run` (it installs it)",
        manifest.display()
    );
    dir
}

/// `python3 tests/clients/ssh_libraries.py LIBRARY`.
fn python(library: &str) -> Command {
    let mut cmd = python_client("ssh_libraries.py");
    cmd.arg(library);
    cmd
}

#[test]
fn go_x_crypto_ssh_key_code_a_mebibyte_and_both_refusals() {
    let bench = Bench::new();
    let out = bench.drive(&mut Command::new(go_client()));
    bench.check(
        &out,
        &["ssh: rejected: administratively prohibited (Administratively prohibited)"],
        // Go names no refusal reason: the server's failure is all it has.
        "ssh: handshake failed: ssh: unable to authenticate, attempted methods \
         [none keyboard-interactive], no supported methods remain",
    );
}

#[test]
fn node_ssh2_key_code_a_mebibyte_and_both_refusals() {
    let bench = Bench::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node_client.js");
    let out = bench.drive(tool("node").env("NODE_PATH", node_modules()).arg(script));
    // ssh2's authHandler sees the partial success and what is left.
    assert_eq!(
        said(&out.stdout(), "after key"),
        Some("keyboard-interactive"),
        "{out}"
    );
    bench.check(
        &out,
        &["(SSH) Channel open failure: Administratively prohibited"],
        "client-authentication All configured authentication methods failed",
    );
}

#[test]
fn libssh2_key_code_a_mebibyte_and_both_refusals() {
    let bench = Bench::new();
    let out = bench.drive(&mut python("libssh2"));
    // libssh2 takes a partial success for a failure; its userauth_list
    // (a `none` request) then names the code (issue 25 item 1).
    assert_eq!(
        all_said(&out.stdout(), "after key"),
        ["keyboard-interactive", "keyboard-interactive"],
        "{out}"
    );
    bench.check(
        &out,
        &["ChannelFailure Channel open failure (administratively prohibited)"],
        "AuthenticationError Authentication failed (keyboard-interactive)",
    );
}

#[test]
fn libssh_key_code_a_mebibyte_and_both_refusals() {
    let bench = Bench::new();
    let out = bench.drive(&mut python("libssh"));
    let text = out.stdout();
    assert_eq!(all_said(&text, "key"), ["partial", "partial"], "{out}");
    assert_eq!(
        said(&text, "after key"),
        Some("keyboard-interactive"),
        "{out}"
    );
    bench.check(
        &out,
        // The number is libssh's own channel id.
        &[
            "SSHError -1 Channel opening failure: channel ",
            " error (1) Administratively prohibited",
        ],
        "AuthenticationDenied Access denied for 'keyboard interactive'. \
         Authentication that can continue: keyboard-interactive",
    );
}
