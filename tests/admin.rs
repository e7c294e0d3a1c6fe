use crate::util::{Gatehouse, dig, tool};

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
    assert_eq!(body, "dns: serving\n");

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
