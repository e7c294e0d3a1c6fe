//! Someone who can write to the fleet's Redis but has no seal key (issue
//! 24): each attack of the security review, issued with `redis-cli` against
//! a real redis-server, is refused, audited (`store_refused`) and counted
//! in `/metrics`. Also: an outage is "unknown" (never "not enrolled"), a
//! ban lift is fleet-wide and survives reconnects, and a Redis of 300k
//! keys does not stop a host from following the fleet's bans.

use crate::{
    fleet::{Fleet, fleet_of, fleet_with, unknown_key_from},
    jump::code_at,
    util::{
        Gatehouse, Hello, SshClient, enrollment_secret, eventually, gatehouse, hello, run, tool,
    },
};

/// `gatehouse totp enroll USER` through host `g`: the secret and the
/// recovery codes.
pub(crate) fn enroll(g: &Gatehouse, user: &str) -> (String, Vec<String>) {
    let out = g.totp("enroll", user);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let secret = enrollment_secret(&text);
    let codes: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Recovery codes"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| l.trim().to_owned())
        .collect();
    assert_eq!(codes.len(), 8, "{text}");
    (secret, codes)
}

/// `ssh -W` through `alias` answering `answer`; whether it got through.
fn through(f: &Fleet, alias: &str, answer: &str) -> bool {
    f.client.answer_with(answer);
    f.client.echo_via(alias, &f.echo).status.success()
}

/// `gatehouse_state_store_refused_total` on host `g`.
fn refused_metric(g: &Gatehouse) -> u64 {
    g.metric("gatehouse_state_store_refused_total")
}

/// The YAML with `bob` (a second user who enrolls in Redis, same key).
fn with_bob(yaml: String) -> String {
    let ana = yaml.find("    ana:\n").expect("ana in the YAML");
    let key_line = yaml[ana..].lines().nth(1).expect("ana's keys").to_owned();
    yaml.replacen(
        "    ana:\n",
        &format!("    bob:\n{key_line}\n      groups: [dev]\n    ana:\n"),
        1,
    )
}

#[test]
fn recovery_codes_copied_from_another_user_are_refused() {
    let f = fleet_with(1, "closed", "\"127.0.0.0/8\"", with_bob);
    let g = &f.hosts[0];
    let (_, alice_codes) = enroll(g, "ana");
    let (_, bob_codes) = enroll(g, "bob");
    // The attack: bob's set gets ana's codes too.
    let added = f.redis.cli(&[
        "SUNIONSTORE",
        "test:recovery:bob",
        "test:recovery:bob",
        "test:recovery:ana",
    ]);
    assert_eq!(added.trim(), "16", "both sets in bob's");
    let before = refused_metric(g);
    assert!(!through(&f, "bob1", &alice_codes[0]), "ana's code for bob");
    let refused = g.audit("store_refused", |v| {
        v["kind"] == "recovery" && v["subject"] == "bob"
    });
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("8 recovery codes")),
        "{refused}"
    );
    let rejected = g.audit("auth", |v| v["user"] == "bob" && v["result"] == "rejected");
    assert_eq!(rejected["detail"], "wrong code", "{rejected}");
    eprintln!("{refused}");
    assert!(refused_metric(g) > before, "counted in /metrics");
    // Each user's own codes still work, once.
    assert!(through(&f, "bob1", &bob_codes[0]), "bob's own code");
    assert!(through(&f, "ana1", &alice_codes[1]), "ana's own code");
}

#[test]
fn a_deleted_enrollment_gives_no_enroll_only_session_until_a_signed_reset() {
    let f = fleet_of(1, "closed", "\"127.0.0.0/8\"");
    let g = &f.hosts[0];
    let (secret, _) = enroll(g, "ana");
    // The attack: her enrollment gone from Redis, her key alone left.
    assert_eq!(f.redis.cli(&["DEL", "test:enrollment:ana"]).trim(), "1");
    let code = code_at(&secret, "now");
    assert!(!through(&f, "ana1", &code), "let in after the DEL");
    // Her key alone: asked for a code (partial), never enroll_only.
    let first = g.audit("auth", |v| v["user"] == "ana" && v["method"] == "publickey");
    assert_eq!(first["result"], "partial", "{first}");
    let refused = g.audit("store_refused", |v| {
        v["kind"] == "enrollment" && v["subject"] == "ana"
    });
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no signed reset")),
        "{refused}"
    );
    // Asked for her code (partial), then refused: never enroll_only.
    let auths = g.audits("auth");
    assert!(
        auths
            .iter()
            .any(|v| v["user"] == "ana" && v["result"] == "partial"),
        "{auths:?}"
    );
    assert!(
        !auths
            .iter()
            .any(|v| v["result"] == "enroll_only" || v["result"] == "accepted"),
        "{auths:?}"
    );
    let rejected = g.audit("auth", |v| v["user"] == "ana" && v["result"] == "rejected");
    assert!(
        rejected["detail"]
            .as_str()
            .is_some_and(|d| d.contains("store refused")),
        "{rejected}"
    );
    // A signed reset (`gatehouse totp reset`) is believed: enrollment is
    // offered again.
    let reset = g.totp("reset", "ana");
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let record = f.redis.cli(&["GET", "test:reset:ana"]);
    assert!(record.trim().split(':').count() == 3, "{record}");
    through(&f, "ana1", &code);
    g.audit("auth", |v| {
        v["user"] == "ana" && v["result"] == "enroll_only"
    });
    // And a forged reset record is not.
    let (secret, _) = enroll(g, "ana");
    f.redis.cli(&["DEL", "test:enrollment:ana"]);
    f.redis.cli(&["SET", "test:reset:ana", "99:1:00"]);
    assert!(!through(&f, "ana1", &code_at(&secret, "now")));
    g.audit("store_refused", |v| v["kind"] == "reset");
    assert_eq!(
        g.audits("auth")
            .iter()
            .filter(|v| v["result"] == "enroll_only")
            .count(),
        1,
        "only after the real reset"
    );
}

#[test]
fn with_on_outage_local_a_host_without_a_copy_asks_for_the_code_and_refuses_it() {
    // mfa optional: "not enrolled" would let her key alone in.
    let mut f = fleet_with(2, "local", "\"127.0.0.0/8\"", |yaml| {
        yaml.replace("mfa: required", "mfa: optional")
    });
    // Enrolled through host 1 (its CLI), never seen by host 2.
    let (secret, _) = enroll(&f.hosts[0], "ana");
    f.redis.stop();
    assert!(!through(&f, "ana2", &code_at(&secret, "now")));
    let g = &f.hosts[1];
    g.audit("auth", |v| v["user"] == "ana" && v["result"] == "partial");
    let rejected = g.audit("auth", |v| v["user"] == "ana" && v["result"] == "rejected");
    assert!(
        rejected["detail"]
            .as_str()
            .is_some_and(|d| d.contains("store unreachable")),
        "{rejected}"
    );
    assert!(
        !g.audits("auth").iter().any(|v| v["result"] == "accepted"),
        "{:?}",
        g.audits("auth")
    );
}

#[test]
fn a_forged_ban_message_or_record_is_refused_and_nothing_is_banned() {
    let f = fleet_of(1, "closed", "");
    let g = &f.hosts[0];
    let forged = r#"{"source":"127.0.0.74","prefix":32,"until":4102444800,"count":1}"#;
    // Retried until the host is subscribed (it subscribes once connected).
    eventually("the forged message is refused or adopted", || {
        f.redis.cli(&["PUBLISH", "test:bans", forged]);
        g.lines().iter().any(|l| {
            l.contains("\"event\":\"store_refused\"") || l.contains("\"event\":\"ban_adopted\"")
        })
    });
    assert!(
        g.audits("ban_adopted").is_empty(),
        "{:?}",
        g.audits("ban_adopted")
    );
    g.audit("store_refused", |v| v["kind"] == "ban");
    // A signed-looking one with a made-up MAC: refused too.
    let fake = format!(
        r#"{{"ban":{{"source":"127.0.0.74","prefix":32,"until":4102444800,"count":1}},"issued":1,"mac":"{}"}}"#,
        "ab".repeat(32)
    );
    f.redis.cli(&["PUBLISH", "test:bans", &fake]);
    f.redis
        .cli(&["HSET", "test:ban-index", "ban:127.0.0.75/32", &fake]);
    g.audit_nth(1, "store_refused", |v| v["kind"] == "ban");
    // A host starting now reads the index: refuses the forged record.
    let late = Gatehouse::start(&std::fs::read_to_string(&g.config).expect("config"));
    late.audit("store_refused", |v| v["kind"] == "ban");
    for host in [g, &late] {
        assert!(host.audits("ban_adopted").is_empty());
        assert_ne!(
            hello(host.jump(), Some("127.0.0.74".parse().expect("ip"))),
            Hello::Closed
        );
        assert!(refused_metric(host) >= 1);
    }
    let file = std::fs::read_to_string(g.dir.path().join("state/bans.json")).unwrap_or_default();
    assert!(!file.contains("127.0.0.74"), "{file}");
}

/// `gatehouse bans ARGS --config FILE` on host `g`: exit code and stdout.
pub(crate) fn bans(g: &Gatehouse, args: &[&str]) -> (Option<i32>, String) {
    let config = g.config.to_str().expect("UTF-8 config path");
    let mut all = vec!["bans"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    let out = gatehouse(&all, g.dir.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn bans_lift_lifts_fleet_wide_and_the_lift_survives_reconnects() {
    let f = fleet_of(2, "closed", "");
    let mut stranger = SshClient::new();
    stranger.add_host("x", f.hosts[0].jump(), "sean");
    for _ in 0..5 {
        unknown_key_from(&f, &stranger, "127.0.0.76", "jump1");
    }
    f.hosts[0].audit("ban", |v| v["source"] == "127.0.0.76");
    f.hosts[1].audit("ban_adopted", |v| v["source"] == "127.0.0.76");
    let source = Some("127.0.0.76".parse().expect("ip"));
    // Lifted on host 2 (which only adopted it): every host drops it.
    let (code, text) = bans(&f.hosts[1], &["lift", "127.0.0.76"]);
    for g in &f.hosts {
        eventually("the ban is lifted", || {
            hello(g.jump(), source) != Hello::Closed
        });
    }
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("across the fleet (1 records removed"),
        "{text}"
    );
    eprintln!("{text}");
    f.hosts[0].audit("ban_lifted", |v| v["source"] == "127.0.0.76");
    assert_eq!(
        f.redis
            .cli(&["HEXISTS", "test:ban-index", "ban:127.0.0.76/32"])
            .trim(),
        "0"
    );
    // Every host's subscription cut: each reconnects, reads the index and
    // announces its bans again; the lift holds.
    let following = |g: &Gatehouse| {
        g.lines()
            .iter()
            .filter(|l| l.contains("following the fleet's bans"))
            .count()
    };
    let before: Vec<usize> = f.hosts.iter().map(following).collect();
    f.redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for (g, n) in f.hosts.iter().zip(before) {
        eventually("resubscribed", || following(g) > n);
    }
    for g in &f.hosts {
        assert_ne!(hello(g.jump(), source), Hello::Closed);
    }
    assert_eq!(
        f.redis
            .cli(&["HEXISTS", "test:ban-index", "ban:127.0.0.76/32"])
            .trim(),
        "0"
    );
    assert!(
        f.hosts
            .iter()
            .all(|g| g.audits("ban_adopted").len() == usize::from(g.pid() == f.hosts[1].pid())),
        "nothing adopted again"
    );
}

#[test]
fn with_300k_keys_in_redis_a_new_host_still_follows_the_fleets_bans() {
    let f = fleet_of(1, "closed", "");
    // What an IPv6 /48 making one `failures:` key per /64 leaves behind.
    let made = f.redis.cli(&[
        "EVAL",
        "for i = 1, 300000 do redis.call('SET', 'test:failures:2001:db8:0:' .. i .. '::', 1) end \
         return redis.call('DBSIZE')",
        "0",
    ]);
    assert!(
        made.trim().parse::<u64>().expect("dbsize") >= 300_000,
        "{made}"
    );
    let late = Gatehouse::start(&std::fs::read_to_string(&f.hosts[0].config).expect("config"));
    late.lines();
    eventually("the late host follows the fleet's bans", || {
        late.lines()
            .iter()
            .any(|l| l.contains("following the fleet's bans"))
    });
    let mut stranger = SshClient::new();
    stranger.add_host("x", f.hosts[0].jump(), "sean");
    for _ in 0..5 {
        unknown_key_from(&f, &stranger, "127.0.0.77", "jump1");
    }
    late.audit("ban_adopted", |v| v["source"] == "127.0.0.77");
    assert_eq!(
        hello(late.jump(), Some("127.0.0.77".parse().expect("ip"))),
        Hello::Closed
    );
}

#[test]
fn an_enrollment_from_before_a_reset_is_not_put_back() {
    let f = fleet_of(1, "closed", "\"127.0.0.0/8\"");
    let g = &f.hosts[0];
    let (old_secret, _) = enroll(g, "ana");
    // The attacker keeps a copy of the old enrollment...
    f.redis
        .cli(&["COPY", "test:enrollment:ana", "test:saved", "REPLACE"]);
    // ...ana is reset and enrolls again; the old one is put back.
    assert!(g.totp("reset", "ana").status.success());
    let (new_secret, _) = enroll(g, "ana");
    assert!(
        through(&f, "ana1", &code_at(&new_secret, "now")),
        "{:?}",
        g.audits("auth")
    );
    f.redis
        .cli(&["COPY", "test:saved", "test:enrollment:ana", "REPLACE"]);
    f.redis.cli(&["DEL", "test:totp-step:ana"]);
    assert!(!through(&f, "ana1", &code_at(&old_secret, "+30 seconds")));
    let refused = g.audit("store_refused", |v| v["kind"] == "enrollment");
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("older")),
        "{refused}"
    );
    // Redis emptied (FLUSHALL, or a restart without persistence): ana is
    // refused, not offered enrollment, until the operator resets her; the
    // reset (generation 1 now, for Redis knows nothing older) is believed.
    f.redis.cli(&["FLUSHALL"]);
    assert!(!through(&f, "ana1", &code_at(&new_secret, "+60 seconds")));
    assert!(
        !g.audits("auth")
            .iter()
            .any(|v| v["result"] == "enroll_only"),
        "{:?}",
        g.audits("auth")
    );
    assert!(g.totp("reset", "ana").status.success());
    through(&f, "ana1", "000000");
    g.audit("auth", |v| {
        v["user"] == "ana" && v["result"] == "enroll_only"
    });
}

#[test]
fn a_forged_count_is_refused_not_believed() {
    let f = fleet_of(1, "closed", "");
    let g = &f.hosts[0];
    // A source's failures set high: one more failure would ban it at once.
    f.redis.cli(&["SET", "test:failures:127.0.0.78", "1000"]);
    let mut stranger = SshClient::new();
    stranger.add_host("x", g.jump(), "sean");
    unknown_key_from(&f, &stranger, "127.0.0.78", "jump1");
    g.audit("failure", |v| {
        v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.78:"))
    });
    eventually("the forged count is refused or believed", || {
        g.lines()
            .iter()
            .any(|l| l.contains("\"event\":\"store_refused\"") || l.contains("\"event\":\"ban\""))
    });
    assert!(g.audits("ban").is_empty(), "{:?}", g.audits("ban"));
    let refused = g.audit("store_refused", |v| v["kind"] == "failures");
    assert_eq!(refused["subject"], "127.0.0.78", "{refused}");
    assert_ne!(
        hello(g.jump(), Some("127.0.0.78".parse().expect("ip"))),
        Hello::Closed
    );
    // A user's wrong-code count written by someone else: the login it is
    // read for is refused, the value is not taken as 0.
    f.redis.cli(&["SET", "test:wrong-codes:sean", "0"]);
    assert!(!through(&f, "jump1", &code_at(&f.secret, "now")));
    g.audit("store_refused", |v| {
        v["kind"] == "wrong-codes" && v["subject"] == "sean"
    });
    // Signed counts still add up: three wrong codes lock sean out.
    f.redis.cli(&["DEL", "test:wrong-codes:sean"]);
    for _ in 0..3 {
        assert!(!through(&f, "jump1", "000000"));
    }
    let stored = f.redis.cli(&["GET", "test:wrong-codes:sean"]);
    assert!(stored.starts_with("3:"), "{stored}");
}

/// A ban message signed as a host with the fleet's seal key would sign it
/// (the format of `jump/src/fleet/{mac,bans}.rs`, rebuilt here in Python
/// from the standard library, so the test does not borrow the code it
/// checks): HKDF-SHA256 of the seal key under the MAC label, then
/// HMAC-SHA256 over the length-prefixed binding.
fn signed_ban(source: &str, until: u64, issued: u64) -> String {
    const SIGN: &str = r#"
import hashlib, hmac, json, struct, sys
seal = bytes.fromhex("5e" * 32)
prk = hmac.new(b"\0" * 32, seal, hashlib.sha256).digest()
key = hmac.new(prk, b"gatehouse fleet value MAC v1\x01", hashlib.sha256).digest()
source, until, issued = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
msg = b""
for part in ["test:", "ban", source + "/32", "until-count"]:
    msg += struct.pack(">Q", len(part)) + part.encode()
value = struct.pack(">QQ", until, 1)
msg += struct.pack(">Q", issued) + struct.pack(">Q", len(value)) + value
mac = hmac.new(key, msg, hashlib.sha256).hexdigest()
ban = {"source": source, "prefix": 32, "until": until, "count": 1}
print(json.dumps({"ban": ban, "issued": issued, "mac": mac}))
"#;
    let out = run(
        tool("python3").args(["-c", SIGN, source, &until.to_string(), &issued.to_string()]),
        b"",
    );
    out.success();
    out.stdout().trim().to_owned()
}

#[test]
fn a_signed_ban_until_2100_ends_within_ban_max() {
    let f = fleet_of(1, "closed", "");
    let g = &f.hosts[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let message = signed_ban("127.0.0.79", 4_102_444_800, now);
    let adopted = {
        let mut found = None;
        eventually("the signed ban is adopted", || {
            f.redis.cli(&["PUBLISH", "test:bans", &message]);
            found = g.audits("ban_adopted").into_iter().next();
            found.is_some()
        });
        found.expect("adopted")
    };
    assert_eq!(adopted["source"], "127.0.0.79", "{adopted}");
    let until = adopted["until"].as_u64().expect("until");
    // ban.max is 24 h (the default): the ban ends then, not in 2100 —
    // 24 h after a moment between the message and its audit line.
    let logged = humantime::parse_rfc3339(adopted["timestamp"].as_str().expect("timestamp"))
        .expect("RFC 3339")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        (now + 86_400..=logged + 86_400).contains(&until),
        "until {until}, sent {now}, adopted {logged}"
    );
    assert_eq!(
        hello(g.jump(), Some("127.0.0.79".parse().expect("ip"))),
        Hello::Closed
    );
    // The same message with one digit of its end changed: refused.
    let tampered = message.replace("4102444800", "4102444801");
    f.redis.cli(&["PUBLISH", "test:bans", &tampered]);
    g.audit("store_refused", |v| {
        v["kind"] == "ban" && v["subject"] == "127.0.0.79/32"
    });
}
