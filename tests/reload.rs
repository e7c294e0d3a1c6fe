use crate::{
    dns::zone_config,
    util::{Gatehouse, dig, eventually},
};

fn a(g: &Gatehouse, name: &str) -> Vec<String> {
    dig(g.dns(), &[name, "A"])
        .answer
        .iter()
        .map(|r| r.data.clone())
        .collect()
}

#[test]
fn an_in_place_rewrite_applies_live() {
    let g = Gatehouse::start(&zone_config(""));
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    g.write_config_in_place(&zone_config("").replace("192.168.222.16", "192.168.222.99"));
    eventually("new address served", || {
        a(&g, "saxophone.sean") == ["192.168.222.99"]
    });
    g.wait_for(|v| v["event"] == "reload" && v["trigger"] == "file" && v["result"] == "ok");
}

#[test]
fn a_rename_replace_applies_live_and_keeps_watching() {
    let g = Gatehouse::start(&zone_config(""));
    let with_piano = zone_config("").replace(
        "        v6only:",
        "        piano: 192.168.222.40\n        v6only:",
    );
    g.replace_config(&with_piano);
    eventually("new record served", || {
        a(&g, "piano.sean") == ["192.168.222.40"]
    });
    // The watch must survive the inode swap: a second replace applies too.
    g.replace_config(&with_piano.replace("192.168.222.40", "192.168.222.41"));
    eventually("second change served", || {
        a(&g, "piano.sean") == ["192.168.222.41"]
    });
}

#[test]
fn sighup_reloads() {
    let g = Gatehouse::start(&zone_config(""));
    g.signal("HUP");
    g.wait_for(|v| v["event"] == "reload" && v["trigger"] == "sighup" && v["result"] == "ok");
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
}

#[test]
fn an_invalid_file_keeps_the_old_config() {
    let g = Gatehouse::start(&zone_config(""));
    let broken = zone_config("")
        .replace("192.168.222.16", "192.168.222.99")
        .replace("ttl: 60s", "ttl: soon");
    g.write_config_in_place(&broken);
    let event = g.wait_for(|v| v["event"] == "reload" && v["result"] == "invalid");
    let error = event["error"].as_str().expect("error text");
    assert!(
        error.contains("gatehouse.yaml:5:8: dns.ttl: \"soon\": expected a duration such as 30s"),
        "{error}"
    );
    // Old answers, still served.
    assert_eq!(a(&g, "saxophone.sean"), ["192.168.222.16"]);
    // And a later good file applies.
    g.write_config_in_place(&zone_config("").replace("192.168.222.16", "192.168.222.77"));
    eventually("fixed config applies", || {
        a(&g, "saxophone.sean") == ["192.168.222.77"]
    });
}
