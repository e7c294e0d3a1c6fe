//! The fleet as operators run it: three gatehouses on 127.0.0.11, .12 and
//! .13 sharing one redis-server, behind a real HAProxy (`mode tcp`,
//! round-robin, `send-proxy-v2` from 127.0.0.9). Through the balancer: a
//! code used on one host is refused on the next, a source failing on
//! several hosts is banned on all of them, and the audited peer is the
//! client's own address.

use std::net::{IpAddr, Ipv4Addr};

use crate::{
    fleet::{fleet_yaml, secret_file},
    jump::code_at,
    util::{Gatehouse, Haproxy, Redis, SshClient, TcpServer, run},
};

const BALANCER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

#[test]
fn three_hosts_behind_haproxy_share_codes_and_bans() {
    let echo = TcpServer::echo();
    let redis = Redis::start();
    let mut client = SshClient::new();
    let (file, secret) = secret_file(client.dir());
    let yaml = fleet_yaml(&client, &file, &redis, "closed", echo.port(), "")
        + "  proxy_protocol:\n    from: [\"127.0.0.9/32\"]\n";
    let hosts: Vec<Gatehouse> = [11, 12, 13]
        .iter()
        .map(|n| {
            Gatehouse::start(&yaml.replace(
                "listen: [\"127.0.0.1:0\"]",
                &format!("listen: [\"127.0.0.{n}:0\"]"),
            ))
        })
        .collect();
    let backends: Vec<_> = hosts.iter().map(Gatehouse::jump).collect();
    let lb = Haproxy::start(&backends, "send-proxy-v2", BALANCER);
    client.add_host("jump", lb.addr, "sean");
    let to = format!("127.0.0.1:{}", echo.port());
    let via_lb = |client: &SshClient, from: &str| {
        let proxy = format!(
            "ProxyCommand=nc -s {from} {} {}",
            lb.addr.ip(),
            lb.addr.port()
        );
        run(
            client.ssh().args(["-o", &proxy, "-W", &to, "jump"]),
            b"hello\n",
        )
    };

    // One code, twice through the balancer: the second lands on another
    // host (round-robin), which refuses it.
    client.answer_with(&code_at(&secret, "now"));
    let first = via_lb(&client, "127.0.0.81");
    first.success();
    assert_eq!(first.stdout(), "hello\n", "{first}");
    via_lb(&client, "127.0.0.81").failure();
    let refusals: Vec<String> = hosts
        .iter()
        .flat_map(|g| g.audits("auth"))
        .filter(|v| v["method"] == "keyboard-interactive" && v["result"] == "rejected")
        .map(|v| v["detail"].to_string())
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].contains("replay"), "{refusals:?}");
    // Each host audits the client's address, not the balancer's.
    let opened: Vec<_> = hosts
        .iter()
        .flat_map(|g| g.audits("connection_opened"))
        .collect();
    assert!(
        opened.iter().all(|v| v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.81:"))),
        "{opened:?}"
    );

    // A stranger's key, 5 times through the balancer: spread over the
    // three hosts, banned on all of them.
    let stranger = {
        let mut s = SshClient::new();
        s.add_host("jump", lb.addr, "sean");
        s
    };
    for _ in 0..5 {
        via_lb(&stranger, "127.0.0.82").failure();
    }
    for g in &hosts {
        g.wait_for(|v| {
            (v["event"] == "ban" || v["event"] == "ban_adopted") && v["source"] == "127.0.0.82"
        });
    }
    let served_before = hosts
        .iter()
        .map(|g| g.audits("connection_opened").len())
        .sum::<usize>();
    via_lb(&stranger, "127.0.0.82").failure();
    let served_after = hosts
        .iter()
        .map(|g| g.audits("connection_opened").len())
        .sum::<usize>();
    assert_eq!(
        served_before, served_after,
        "the banned source got an SSH session"
    );
    // The balancer itself is never what gets banned.
    for g in &hosts {
        assert!(
            g.audits("ban").iter().all(|v| v["source"] != "127.0.0.9"),
            "{:?}",
            g.audits("ban")
        );
    }
}
