//! Behind a load balancer: a real HAProxy (`mode tcp`) sends PROXY headers
//! (v2 and v1) from 127.0.0.9, the address in `jump.proxy_protocol.from`.
//! The client's own address (127.0.0.6x, named in the header) is the one
//! audited, banned and rate-limited; headers from anywhere else, missing
//! headers from the balancer, malformed or truncated ones are refused, and
//! none blocks anyone else's login.

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr},
};

use crate::{
    jump::config,
    util::{
        Gatehouse, Haproxy, Hello, SshClient, Sshd, closed_without_a_byte, connect_from, hello,
        read_hello, run, source,
    },
};

/// The balancer's address, as the gatehouses see it.
const BALANCER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

/// sean's client and a real sshd, behind a gatehouse trusting 127.0.0.9's
/// PROXY headers, behind HAProxy sending them (`server_option`). The
/// client's `jump` is the balancer and `target` the sshd; sean is enrolled
/// (`secret`), answering codes is the caller's. Fields drop in order: the
/// balancer first.
struct Balanced {
    lb: Haproxy,
    g: Gatehouse,
    sshd: Sshd,
    client: SshClient,
    secret: String,
}

fn balanced(server_option: &str) -> Balanced {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let yaml = config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", sshd.addr.port())])],
    );
    let g = Gatehouse::start(&format!(
        "{yaml}  proxy_protocol:\n    from: [\"{BALANCER}/32\"]\n"
    ));
    let lb = Haproxy::start(&[g.jump()], server_option, BALANCER);
    client.add_host("jump", lb.addr, "sean");
    client.add_host("target", sshd.addr, &sshd.user);
    let secret = g.enroll("sean");
    Balanced {
        lb,
        g,
        sshd,
        client,
        secret,
    }
}

/// `ssh target echo ...` through the balancer, the jump hop from `from`
/// (`-J` would not pass `-b` on to the jump hop: a ProxyCommand does).
fn login_from(client: &SshClient, from: IpAddr) -> crate::util::Output {
    let proxy = format!(
        "ProxyCommand={} -b {from} -W %h:%p jump",
        client.ssh_command_line()
    );
    run(
        client.ssh().args(["-o", &proxy, "target", "echo through"]),
        b"",
    )
}

fn through_haproxy(server_option: &str, from: u8) {
    let Balanced {
        client,
        sshd: _sshd,
        g,
        lb: _lb,
        secret,
    } = balanced(server_option);
    client.answer_with_totp(&secret);

    let out = login_from(&client, source(from));
    out.success();
    assert_eq!(out.stdout(), "through\n", "{out}");
    let opened = g.audit("connection_opened", |_| true);
    let peer = opened["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with(&format!("127.0.0.{from}:")), "{opened}");
    let by = opened["proxied_by"].as_str().unwrap_or_default();
    assert!(by.starts_with("127.0.0.9:"), "{opened}");
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert!(
        accepted["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("127.0.0.{from}:"))),
        "{accepted}"
    );
}

#[test]
fn behind_haproxy_v2_the_audited_peer_is_the_client() {
    through_haproxy("send-proxy-v2", 61);
}

#[test]
fn behind_haproxy_v1_the_audited_peer_is_the_client() {
    through_haproxy("send-proxy", 62);
}

#[test]
fn a_ban_behind_the_balancer_hits_the_client_not_the_balancer() {
    let Balanced {
        client,
        sshd,
        g,
        lb,
        secret,
    } = balanced("send-proxy-v2");

    // mallory's key is unknown: 5 connections, 5 failures, a ban.
    let mut mallory = SshClient::new();
    mallory.add_host("jump", lb.addr, "sean");
    mallory.add_host("target", sshd.addr, &sshd.user);
    for _ in 0..5 {
        login_from(&mallory, source(63)).failure();
    }
    let ban = g.audit("ban", |_| true);
    assert_eq!(ban["source"], "127.0.0.63", "{ban}");
    // Closed before any SSH byte, though it came through the balancer.
    let shut_out = login_from(&mallory, source(63));
    shut_out.failure();
    assert!(
        g.audits("connection_opened")
            .iter()
            .filter(|v| v["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.63:")))
            .count()
            == 5,
        "{:?}",
        g.audits("connection_opened")
    );
    // Everyone else behind the same balancer still gets in.
    client.answer_with_totp(&secret);
    let out = login_from(&client, source(64));
    out.success();
    assert_eq!(out.stdout(), "through\n", "{out}");
}

#[test]
fn missing_malformed_truncated_and_foreign_headers_are_refused_without_blocking_anyone() {
    let Balanced {
        client,
        sshd: _sshd,
        g,
        lb,
        secret,
    } = balanced("send-proxy-v2");
    client.answer_with_totp(&secret);

    // From the balancer's address, a truncated header, then silence: held
    // until the header deadline, while a login through HAProxy goes on.
    let mut truncated = connect_from(BALANCER, g.jump());
    truncated
        .write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11")
        .expect("write");
    let out = login_from(&client, source(65));
    out.success();
    assert_eq!(out.stdout(), "through\n", "{out}");
    closed_without_a_byte(&mut truncated);
    let refused = g.audit("proxy_refused", |_| true);
    assert_eq!(refused["reason"], "no PROXY header within 5s", "{refused}");

    // From the balancer's address without a header (an SSH client talking
    // straight to the gatehouse): closed before any SSH byte.
    let mut bare = connect_from(BALANCER, g.jump());
    bare.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").expect("write");
    closed_without_a_byte(&mut bare);
    g.audit("proxy_refused", |v| {
        v["reason"] == "no PROXY header (the connection started with other bytes)"
    });

    // A malformed one (v1 with an impossible address).
    let mut bad = connect_from(BALANCER, g.jump());
    bad.write_all(b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\nSSH-2.0-x\r\n")
        .expect("write");
    closed_without_a_byte(&mut bad);
    g.audit("proxy_refused", |v| {
        v["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("malformed PROXY header"))
    });

    // A health check: connect and close. Nothing to audit.
    drop(connect_from(BALANCER, g.jump()));

    // A header from anywhere else is not believed: the client at
    // 127.0.0.66 claims to be 203.0.113.1. russh takes no line before a
    // client's identification, so the handshake fails, audited as itself.
    let mut foreign = connect_from(source(66), g.jump());
    foreign
        .write_all(b"PROXY TCP4 203.0.113.1 127.0.0.1 1000 22\r\nSSH-2.0-x\r\n")
        .expect("write");
    assert!(matches!(read_hello(&mut foreign), Hello::Identification(_)));
    let closed = g.audit("connection_closed", |v| {
        v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.66:"))
    });
    assert!(
        closed["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("handshake failed")),
        "{closed}"
    );
    assert!(
        g.audits("connection_opened").iter().all(|v| v["peer"]
            .as_str()
            .is_some_and(|p| !p.starts_with("203.0.113."))),
        "{:?}",
        g.audits("connection_opened")
    );
    // Three refusals, the health check not among them, and the gatehouse
    // still serves the balancer.
    assert_eq!(
        g.audits("proxy_refused").len(),
        3,
        "{:?}",
        g.audits("proxy_refused")
    );
    assert!(matches!(hello(lb.addr, None), Hello::Identification(_)));
}

/// The local port of each of `sockets`.
fn ports(sockets: &[std::net::TcpStream]) -> Vec<u16> {
    sockets
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

/// The balancer's ports audited as `no PROXY header within 5s`.
fn timed_out(g: &Gatehouse) -> Vec<u16> {
    g.audits("proxy_refused")
        .iter()
        .filter(|v| v["reason"] == "no PROXY header within 5s")
        .filter_map(|v| v["peer"].as_str()?.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .collect()
}

#[test]
fn idle_sockets_from_the_balancers_address_give_way_to_its_real_connections() {
    let Balanced {
        client,
        sshd: _sshd,
        g,
        lb: _lb,
        secret,
    } = balanced("send-proxy-v2");
    client.answer_with_totp(&secret);

    // 300 sockets from the balancer's own address that never send a
    // header: 256 wait at once (HEADERS_AT_ONCE), each newcomer evicting
    // the oldest, so the first 44 are closed by the server at once.
    let mut idle: Vec<_> = (0..300).map(|_| connect_from(BALANCER, g.jump())).collect();
    // And a flood that goes on while a real login comes through HAProxy:
    // one idle socket every 5 ms (1000 per 5 s deadline, 256 would do)
    // keeps the wait full, so the login's connection only gets in by
    // evicting one, and keeps its place for 256 newcomers (about 1.3 s)
    // while its header is read.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = std::sync::Arc::clone(&stop);
        let jump = g.jump();
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut opened = 0_u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.push_back(connect_from(BALANCER, jump));
                opened += 1;
                // Long evicted by then: the client side lets go too.
                if held.len() > 512 {
                    held.pop_front();
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            opened
        })
    };
    let out = login_from(&client, source(67));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded = flood.join().expect("flood thread");
    out.success();
    assert_eq!(out.stdout(), "through\n", "{out}");
    let opened = g.audit("connection_opened", |_| true);
    let peer = opened["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.67:"), "{opened}");
    assert!(flooded > 0, "the flood ran");

    // Every idle socket of the burst is closed by the server in the end:
    // evicted by a newer one, or at its deadline, audited. One more after
    // the flood, the newest, can only time out: once its audit is out, any
    // of the burst's would be (their deadlines came first).
    for socket in &mut idle {
        closed_without_a_byte(socket);
    }
    let mut last = connect_from(BALANCER, g.jump());
    closed_without_a_byte(&mut last);
    let last = ports(std::slice::from_ref(&last))[0];
    g.audit("proxy_refused", |v| {
        v["peer"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!(":{last}")))
    });
    let audited = timed_out(&g);
    let burst = ports(&idle);
    let evicted: Vec<u16> = burst[..44]
        .iter()
        .copied()
        .filter(|p| !audited.contains(p))
        .collect();
    assert_eq!(
        evicted,
        burst[..44],
        "the oldest 44 were evicted, not timed out"
    );
    println!(
        "{flooded} flood sockets during the login; {} of the burst's 300 timed out, the rest evicted",
        burst.iter().filter(|p| audited.contains(p)).count()
    );
}

#[test]
fn an_ipv4_balancer_on_a_dual_stack_listener_is_the_balancer() {
    let mut client = SshClient::new();
    let sshd = Sshd::start(&client.public_key());
    let yaml = config(
        "required",
        &[("sean", &client, &["dev"])],
        &[("dev", vec![format!("127.0.0.0/8:{}", sshd.addr.port())])],
    )
    .replace("listen: [\"127.0.0.1:0\"]", "listen: [\"[::]:0\"]");
    let g = Gatehouse::start(&format!(
        "{yaml}  proxy_protocol:\n    from: [\"127.0.0.0/8\"]\n"
    ));
    let listening = g.jump();
    assert!(
        listening.ip().is_unspecified() && listening.is_ipv6(),
        "{listening}"
    );
    // HAProxy reaches it over IPv4: the gatehouse accepts the connection
    // from ::ffff:127.0.0.9.
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], listening.port()));
    let lb = Haproxy::start(&[v4], "send-proxy-v2", BALANCER);
    client.add_host("jump", lb.addr, "sean");
    client.add_host("target", sshd.addr, &sshd.user);
    client.answer_with_totp(&g.enroll("sean"));

    let out = login_from(&client, source(68));
    out.success();
    assert_eq!(out.stdout(), "through\n", "{out}");
    let opened = g.audit("connection_opened", |_| true);
    assert!(
        opened["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.68:")),
        "{opened}"
    );
    assert!(
        opened["proxied_by"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.9:")),
        "{opened}"
    );
    assert_eq!(opened["local"], v4.to_string(), "{opened}");
    g.audit("auth", |v| {
        v["result"] == "accepted"
            && v["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.68:"))
    });

    // Straight from an IPv4 address in `from`, no header: refused as a
    // balancer's connection, audited under its IPv4 address.
    let mut bare = connect_from(source(69), v4);
    bare.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").expect("write");
    closed_without_a_byte(&mut bare);
    g.audit("proxy_refused", |v| {
        v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.69:"))
    });
    // Over IPv6 from ::1 (not in `from`): an ordinary client, greeted.
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listening.port()));
    assert!(matches!(hello(v6, None), Hello::Identification(_)));
}
