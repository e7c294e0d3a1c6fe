use std::net::TcpStream;

use crate::util::{Gatehouse, closed_without_a_byte, dig, tool};

fn curl(url: &str) -> (String, String) {
    let out = tool("curl")
        .args(["-s", "-i", "--max-time", "10", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

#[test]
fn healthz_and_metrics_over_http() {
    let g = Gatehouse::start(
        "state_dir: state\nlog: { format: json }\ndns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.168.222.16\nadmin:\n  listen: 127.0.0.1:0\n",
    );
    let admin = *g.listening("admin").first().expect("admin listening");
    let (head, body) = curl(&format!("http://{admin}/healthz"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "dns: serving\nconfig: current\n");

    assert_eq!(
        dig(g.dns(), &["saxophone.sean", "A"]).answer_data(),
        ["192.168.222.16"]
    );
    dig(g.dns(), &["piano.sean", "A"]);
    let (head, body) = curl(&format!("http://{admin}/metrics"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        body.contains("gatehouse_dns_responses_total{rcode=\"NOERROR\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("gatehouse_dns_responses_total{rcode=\"NXDOMAIN\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE gatehouse_jump_tunnels_open gauge"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    let (head, _) = curl(&format!("http://{admin}/nope"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

/// An invalid reload keeps the old config, and says so until a good file
/// applies: logged at error with file:line:col, counted, and on /healthz.
#[test]
fn an_invalid_reload_is_loud_until_a_good_file_applies() {
    let good = "state_dir: state\nlog: { format: json }\ndns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.168.222.16\nadmin:\n  listen: 127.0.0.1:0\n";
    let g = Gatehouse::start(good);
    let admin = *g.listening("admin").first().expect("admin listening");
    let metric = |name: &str| {
        let (_, body) = curl(&format!("http://{admin}/metrics"));
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    };
    assert_eq!(metric("gatehouse_config_reload_failed_total"), "0");
    assert_eq!(metric("gatehouse_config_stale"), "0");

    g.write_config_in_place(&good.replace("192.168.222.16", "192.168.222.300"));
    let refused = g.wait_for(|v| v["event"] == "reload" && v["result"] == "invalid");
    assert_eq!(refused["level"], "ERROR", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("gatehouse.yaml:8:20")),
        "{refused}"
    );
    let (head, body) = curl(&format!("http://{admin}/healthz"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "still serving: {head}");
    assert!(
        body.contains("config: stale, the file does not apply: "),
        "{body}"
    );
    assert!(body.contains("gatehouse.yaml:8:20"), "{body}");
    assert_eq!(metric("gatehouse_config_reload_failed_total"), "1");
    assert_eq!(metric("gatehouse_config_stale"), "1");
    // The old zones are still served.
    assert_eq!(
        dig(g.dns(), &["saxophone.sean", "A"]).answer_data(),
        ["192.168.222.16"]
    );

    g.write_config_in_place(good);
    g.wait_for(|v| v["event"] == "reload" && v["result"] == "ok");
    let (_, body) = curl(&format!("http://{admin}/healthz"));
    assert!(body.ends_with("config: current\n"), "{body}");
    assert_eq!(metric("gatehouse_config_stale"), "0");
    assert_eq!(metric("gatehouse_config_reload_failed_total"), "1");
}

/// Issue 23, item 8a: idle sockets on every slot (and four times more)
/// must not keep a health check out, and each is closed, not held.
#[test]
fn healthz_is_answered_while_64_idle_sockets_are_open() {
    let g = Gatehouse::start(
        "state_dir: state\nlog: { format: json }\ndns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.168.222.16\nadmin:\n  listen: 127.0.0.1:0\n",
    );
    let admin = *g.listening("admin").first().expect("admin listening");
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(admin).expect("connect to admin"))
        .collect();
    let (head, body) = curl(&format!("http://{admin}/healthz"));
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "dns: serving\nconfig: current\n");
    // Each idle socket is closed by the server (evicted for a newer one,
    // or after the second it had to send its request), nothing sent.
    for mut socket in idle {
        closed_without_a_byte(&mut socket);
    }
}
