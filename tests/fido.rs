//! FIDO security keys (`sk-` keys) with the real OpenSSH client signing
//! through OpenSSH's own software token, `sk-dummy.so` (built by
//! `tests/sk-dummy`), which signs with the flags the key was made with:
//! 0x01 (touch), 0x00 (`-O no-touch-required`), 0x05 (`-O
//! verify-required`). Touch is required unless the key line (or the
//! certificate) says `no-touch-required`; `verify-required` needs a
//! verified signature, which is then a whole login without the code; every
//! refusal is audited with its reason, every signature's counter too.

use serde_json::Value;

use crate::{
    certs::Ca,
    jump::code_at,
    util::{Gatehouse, SshClient, TcpServer},
};

/// sk-dummy's counter: the same in every signature.
const SK_DUMMY_COUNTER: u64 = 0x1234_5678;

/// sean with the key line `line` (or, with `line` None, certificates from
/// `ca` only), `mfa: required`, allowed to `echo`.
fn config(line: Option<&str>, ca: Option<&Ca>, echo: &TcpServer) -> String {
    let keys = line.map_or(String::new(), |l| format!("keys: [\"{l}\"], "));
    let user_ca = ca.map_or(String::new(), |ca| {
        format!("  user_ca:\n    keys: [\"{}\"]\n", ca.public())
    });
    format!(
        "state_dir: state\nlog: {{ format: json }}\njump:\n  listen: [\"127.0.0.1:0\"]\n  \
         mfa: required\n{user_ca}  users:\n    sean: {{ {keys}groups: [dev] }}\n  groups:\n    \
         dev: {{ allow: [\"127.0.0.0/8:{}\"] }}\n",
        echo.port()
    )
}

/// A jump host for `client` (key line: OPTIONS + its key), sean enrolled.
fn jump_for(client: &mut SshClient, options: &str, echo: &TcpServer) -> (Gatehouse, String) {
    let line = format!("{options}{}", client.public_key());
    let g = Gatehouse::start(&config(Some(&line), None, echo));
    client.add_host("jump", g.jump(), "sean");
    let secret = g.enroll("sean");
    (g, secret)
}

/// The `security_key` audit line of `verdict`.
fn security_key(g: &Gatehouse, verdict: &str) -> Value {
    g.audit("security_key", |v| v["verdict"] == verdict)
}

fn asked_for_a_code(client: &SshClient) -> bool {
    client
        .prompts()
        .iter()
        .any(|p| p.contains("Verification code"))
}

#[test]
fn a_touched_key_and_the_code_get_a_tunnel() {
    let echo = TcpServer::echo();
    let mut client = SshClient::security_key("ed25519-sk", &[]);
    let (g, secret) = jump_for(&mut client, "", &echo);
    client.answer_with(&code_at(&secret, "now"));
    let out = client.echo_via("jump", &echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    assert!(
        asked_for_a_code(&client),
        "touch only: the code is still asked"
    );
    let sk = security_key(&g, "first factor");
    assert_eq!(sk["flags"], 0x01, "{sk}");
    assert_eq!(sk["counter"], SK_DUMMY_COUNTER, "{sk}");
    assert_eq!(sk["fingerprint"], client.fingerprint(), "{sk}");
    assert_eq!(sk["possible_clone"], false, "the first signature: {sk}");
    g.audit("auth", |v| {
        v["result"] == "partial" && v["detail"] == "key accepted; TOTP code next"
    });
    g.audit("auth", |v| {
        v["result"] == "accepted" && v["method"] == "keyboard-interactive"
    });
}

#[test]
fn an_untouched_signature_is_refused_unless_the_line_says_no_touch_required() {
    let echo = TcpServer::echo();
    let mut client = SshClient::security_key("ecdsa-sk", &["no-touch-required"]);
    let (g, secret) = jump_for(&mut client, "", &echo);
    client.answer_with(&code_at(&secret, "now"));
    let out = client.echo_via("jump", &echo);
    out.failure();
    let sk = security_key(&g, "no touch");
    assert_eq!(sk["flags"], 0x00, "{sk}");
    let refused = g.audit("auth", |v| v["result"] == "rejected");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("security key: no touch")),
        "{refused}"
    );
    assert!(!asked_for_a_code(&client), "refused before any code");
    assert!(
        g.audits("auth")
            .iter()
            .all(|v| v["result"] != "partial" && v["result"] != "accepted"),
        "never a first factor"
    );
    drop(g);

    // The same key where its line allows it: the first factor (+ code).
    let (g, secret) = jump_for(&mut client, "no-touch-required ", &echo);
    client.answer_with(&code_at(&secret, "now"));
    let out = client.echo_via("jump", &echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    let sk = security_key(&g, "first factor");
    assert_eq!(sk["flags"], 0x00, "{sk}");
    assert!(asked_for_a_code(&client));
}

#[test]
fn a_verify_required_key_is_a_whole_login() {
    let echo = TcpServer::echo();
    let mut client = SshClient::security_key("ed25519-sk", &["verify-required"]);
    let (g, _secret) = jump_for(&mut client, "verify-required ", &echo);
    // A real token asks for its PIN through askpass, as for a code;
    // sk-dummy asks none (askpass only shows ssh's "Confirm user presence"
    // notice). Anything but a code prompt gets this answer.
    client.answer_with("123456");
    let out = client.echo_via("jump", &echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    assert!(
        !asked_for_a_code(&client),
        "no code after a verified key: {:?}",
        client.prompts()
    );
    let sk = security_key(&g, "whole login");
    assert_eq!(sk["flags"], 0x05, "{sk}");
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(accepted["method"], "publickey", "{accepted}");
    assert_eq!(
        accepted["detail"], "security key verified (verify-required): a whole login, no code",
        "{accepted}"
    );

    // A second login: the same counter (sk-dummy never counts) is flagged
    // as a possible clone, and still logs in.
    client.echo_via("jump", &echo).success();
    let again = g.audit_nth(1, "security_key", |v| v["verdict"] == "whole login");
    assert_eq!(again["possible_clone"], true, "{again}");
    assert_eq!(again["last_counter"], SK_DUMMY_COUNTER, "{again}");
}

#[test]
fn a_verify_required_line_refuses_a_signature_without_verification() {
    let echo = TcpServer::echo();
    // Made without -O verify-required: sk-dummy signs with touch only.
    let mut client = SshClient::security_key("ed25519-sk", &[]);
    let (g, secret) = jump_for(&mut client, "verify-required ", &echo);
    client.answer_with(&code_at(&secret, "now"));
    client.echo_via("jump", &echo).failure();
    let sk = security_key(&g, "not verified");
    assert_eq!(sk["flags"], 0x01, "{sk}");
    let refused = g.audit("auth", |v| v["result"] == "rejected");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("security key: not verified")),
        "{refused}"
    );
    assert!(!asked_for_a_code(&client), "no code: refused outright");
}

/// A jump host trusting `ca` for sean (no keys), sean enrolled.
fn cert_host(ca: &Ca, client: &mut SshClient, echo: &TcpServer) -> (Gatehouse, String) {
    let g = Gatehouse::start(&config(None, Some(ca), echo));
    client.add_host("jump", g.jump(), "sean");
    let secret = g.enroll("sean");
    (g, secret)
}

#[test]
fn certificates_on_security_keys_carry_the_same_rules() {
    let echo = TcpServer::echo();
    let ca = Ca::new();

    // verify-required (critical option) on a verify-required key: whole login.
    let mut verified = SshClient::security_key("ed25519-sk", &["verify-required"]);
    ca.sign_user(
        &verified,
        "sean@yubikey",
        &["-n", "sean", "-O", "verify-required"],
    );
    let (g, _) = cert_host(&ca, &mut verified, &echo);
    verified.answer_with("123456");
    verified.echo_via("jump", &echo).success();
    assert!(!asked_for_a_code(&verified), "{:?}", verified.prompts());
    g.audit("certificate", |v| v["key_id"] == "sean@yubikey");
    security_key(&g, "whole login");
    drop(g);

    // verify-required on a certificate whose key signs with touch only.
    let mut touch = SshClient::security_key("ed25519-sk", &[]);
    ca.sign_user(
        &touch,
        "sean@touch",
        &["-n", "sean", "-O", "verify-required"],
    );
    let (g, secret) = cert_host(&ca, &mut touch, &echo);
    touch.answer_with(&code_at(&secret, "now"));
    touch.echo_via("jump", &echo).failure();
    security_key(&g, "not verified");
    drop(g);

    // An untouched signature: refused, unless the certificate has the
    // no-touch-required extension (then the code is next).
    let mut untouched = SshClient::security_key("ed25519-sk", &["no-touch-required"]);
    ca.sign_user(&untouched, "sean@untouched", &["-n", "sean"]);
    let (g, secret) = cert_host(&ca, &mut untouched, &echo);
    untouched.answer_with(&code_at(&secret, "now"));
    untouched.echo_via("jump", &echo).failure();
    security_key(&g, "no touch");
    drop(g);
    ca.sign_user(
        &untouched,
        "sean@untouched-ok",
        &["-n", "sean", "-O", "no-touch-required"],
    );
    let (g, secret) = cert_host(&ca, &mut untouched, &echo);
    untouched.answer_with(&code_at(&secret, "now"));
    let out = untouched.echo_via("jump", &echo);
    out.success();
    assert_eq!(out.stdout(), "hello\n", "{out}");
    security_key(&g, "first factor");
    assert!(asked_for_a_code(&untouched));
}

#[test]
fn check_says_which_keys_are_a_whole_login() {
    let touch = SshClient::security_key("ed25519-sk", &[]);
    let verified = SshClient::security_key("ed25519-sk", &["verify-required"]);
    let untouched = SshClient::security_key("ecdsa-sk", &["no-touch-required"]);
    let laptop = SshClient::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "jump:\n  listen: [\"127.0.0.1:0\"]\n  mfa: required\n  users:\n    sean:\n      keys:\n        \
         - \"{}\"\n        - \"verify-required {}\"\n        - \"no-touch-required {}\"\n        \
         - \"{}\"\n",
        touch.public_key(),
        verified.public_key(),
        untouched.public_key(),
        laptop.public_key()
    );
    std::fs::write(dir.path().join("g.yaml"), yaml).expect("write");
    let out = crate::util::gatehouse(&["check", "--config", "g.yaml"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |client: &SshClient, what: &str| {
        format!(
            "    {} {} gatehouse-test: {what}\n",
            client.public_key().split(' ').next().expect("type"),
            client.fingerprint()
        )
    };
    assert!(
        stdout.contains("  user sean: 4 keys, groups []\n"),
        "{stdout}"
    );
    for expected in [
        line(&touch, "touch, then the code"),
        line(
            &verified,
            "a whole login (verify-required: touch + PIN or fingerprint, no code)",
        ),
        line(
            &untouched,
            "no touch required (no-touch-required), then the code",
        ),
    ] {
        assert!(stdout.contains(&expected), "{expected:?} in\n{stdout}");
    }
    assert!(
        !stdout.contains(&laptop.fingerprint()),
        "an ordinary key is not listed: {stdout}"
    );
}

#[test]
fn a_counter_one_host_saw_flags_the_same_counter_on_another() {
    let echo = TcpServer::echo();
    let redis = crate::util::Redis::start();
    let mut client = SshClient::security_key("ed25519-sk", &["verify-required"]);
    let yaml = format!(
        "state_dir: state\nlog: {{ format: json }}\nstate:\n  redis:\n    url: \"{}\"\n    \
         key_prefix: \"test:\"\n    seal_key_file: \"{}\"\njump:\n  listen: [\"127.0.0.1:0\"]\n  \
         mfa: required\n  users:\n    sean: {{ keys: [\"verify-required {}\"], groups: [dev] }}\n  \
         groups:\n    dev: {{ allow: [\"127.0.0.0/8:{}\"] }}\n",
        redis.url(),
        crate::fleet::seal_key(client.dir()).display(),
        client.public_key(),
        echo.port()
    );
    let (one, two) = (Gatehouse::start(&yaml), Gatehouse::start(&yaml));
    client.add_host("jump", one.jump(), "sean");
    client.answer_with("123456");
    client.echo_via("jump", &echo).success();
    let first = security_key(&one, "whole login");
    assert_eq!(first["possible_clone"], false, "{first}");
    assert_eq!(first["last_counter"], Value::Null, "{first}");

    // The other host never saw this key itself: only the fleet's Redis
    // tells it the counter is not new.
    client.add_host("jump", two.jump(), "sean");
    client.echo_via("jump", &echo).success();
    let second = security_key(&two, "whole login");
    assert_eq!(second["possible_clone"], true, "{second}");
    assert_eq!(second["last_counter"], SK_DUMMY_COUNTER, "{second}");
    assert_eq!(second["counter"], SK_DUMMY_COUNTER, "{second}");
    // A possible clone is flagged, not refused.
    two.audit("auth", |v| v["result"] == "accepted");
}

#[test]
fn a_whole_login_is_cut_when_its_line_drops_verify_required() {
    let echo = TcpServer::echo();
    let mut client = SshClient::security_key("ed25519-sk", &["verify-required"]);
    let line = format!("verify-required {}", client.public_key());
    let g = Gatehouse::start(&config(Some(&line), None, &echo));
    client.add_host("jump", g.jump(), "sean");
    client.answer_with("123456");
    let to = format!("127.0.0.1:{}", echo.port());
    let mut live = crate::util::Terminal::start(client.ssh().args(["-W", &to, "jump"]));
    live.send(b"ping\n");
    live.expect("ping\n");
    security_key(&g, "whole login");
    // The same key, now touch-only: this session gave no code.
    g.replace_config(&config(Some(&client.public_key()), None, &echo));
    let off = g.audit("offboarded", |_| true);
    assert_eq!(
        off["reason"], "the key line no longer says verify-required and this session gave no code",
        "{off}"
    );
    live.finish().failure();
}
