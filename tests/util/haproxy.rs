//! A throwaway HAProxy in `mode tcp` on loopback: the load balancer in
//! front of gatehouses, speaking the PROXY protocol to them.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    process::Command,
    time::{Duration, Instant},
};

use super::{Daemon, PATIENCE, free_port, tool};

/// HAProxy balancing round-robin over some gatehouses.
pub struct Haproxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Balance over `backends`, each sent `server_option` (`send-proxy-v2`
    /// or `send-proxy`), connecting to them from `source`.
    pub fn start(backends: &[SocketAddr], server_option: &str, source: IpAddr) -> Haproxy {
        let _ = tool("haproxy");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  server g{i} {b} {server_option}\n"))
            .collect();
        // The port is picked, released, then bound by HAProxy: retried if
        // another test took it in between.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            std::fs::write(
                &config,
                format!(
                    "global\n  maxconn 512\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                     timeout client 120s\n  timeout server 120s\n\
                     frontend ssh\n  bind {addr}\n  default_backend gatehouses\n\
                     backend gatehouses\n  balance roundrobin\n  source {source}\n{servers}"
                ),
            )
            .expect("write haproxy.cfg");
            let mut daemon = Daemon::start(
                "haproxy",
                Command::new("haproxy").arg("-db").arg("-f").arg(&config),
                &log,
            );
            let deadline = Instant::now() + PATIENCE;
            loop {
                // Listening once the port cannot be bound (HAProxy binds
                // with SO_REUSEPORT; this probe does not).
                if TcpListener::bind(addr).is_err() && daemon.exited().is_none() {
                    return Haproxy {
                        addr,
                        _daemon: daemon,
                        _dir: dir,
                    };
                }
                if let Some(status) = daemon.exited() {
                    let log = daemon.log();
                    assert!(
                        log.contains("cannot bind"),
                        "haproxy exited with {status}:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "haproxy did not start:\n{}",
                    daemon.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("haproxy found no free port in 5 tries");
    }
}
