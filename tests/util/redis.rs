//! A throwaway redis-server on loopback: the store a fleet shares. It can
//! be stopped and started again on the same port (an outage, a restart
//! that lost everything: no persistence).

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use super::{Daemon, PATIENCE, free_port, tool};

/// redis-server with no persistence, on 127.0.0.1.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    daemon: Option<Daemon>,
    dir: tempfile::TempDir,
    /// TLS only (`rediss://`), with a certificate for 127.0.0.1 signed
    /// by the CA in this PEM file.
    pub ca: Option<std::path::PathBuf>,
}

/// In `dir`: a CA (`ca.crt`) and, signed by it, a certificate for
/// 127.0.0.1 (`redis.crt`, `redis.key`), both valid two days.
pub fn make_certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        super::run(tool("openssl").args(args).current_dir(dir), b"").success();
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=gatehouse test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "redis.key",
                "-out",
                "redis.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san"), "subjectAltName=IP:127.0.0.1\n").expect("write");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "redis.crt",
        "-days",
        "2",
        "-extfile",
        "san",
    ]);
}

impl Redis {
    /// Start one on a free port.
    pub fn start() -> Redis {
        let _ = tool("redis-server");
        let mut dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let mut redis = Redis {
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                daemon: None,
                dir,
                ca: None,
            };
            if redis.run() {
                return redis;
            }
            dir = redis.dir;
        }
        panic!("redis-server found no free port in 5 tries");
    }

    /// Start one speaking TLS only, its certificate from a CA made here.
    pub fn start_tls() -> Redis {
        let _ = tool("redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path());
        let mut redis = Redis {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            daemon: None,
            ca: Some(dir.path().join("ca.crt")),
            dir,
        };
        assert!(redis.run(), "redis-server (TLS) did not get its port");
        redis
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}/0", self.addr)
    }

    /// Start on its port; false if the port was taken.
    fn run(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let port = self.addr.port().to_string();
        let mut cmd = Command::new("redis-server");
        match &self.ca {
            None => cmd.args(["--port", &port]),
            Some(ca) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--tls-cert-file")
                .arg(self.dir.path().join("redis.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.path().join("redis.key")),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let mut daemon = Daemon::start("redis-server", &mut cmd, &log);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = daemon.log();
            if text.contains("Ready to accept connections") {
                self.daemon = Some(daemon);
                return true;
            }
            if daemon.exited().is_some() {
                assert!(
                    text.contains("Address already in use"),
                    "redis-server exited:\n{text}"
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill it: an outage.
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        assert!(
            self.run(),
            "redis-server could not get its port {} back",
            self.addr
        );
    }

    /// `redis-cli ARGS...` against it; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = super::run(
            tool("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
                .args(args),
            b"",
        );
        out.success();
        out.stdout()
    }
}
