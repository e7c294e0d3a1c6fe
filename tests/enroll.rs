//! The MFA lifecycle end to end: self-enrollment in an interactive `ssh -tt`
//! session (QR code, secret, confirmation, recovery codes), what an
//! unenrolled user may and may not do, recovery codes at the
//! `Verification code:` prompt, `gatehouse totp status|reset|enroll`,
//! `mfa: optional`, the per-user code limit, two enrollments racing, and
//! secrets provisioned by configuration management (`totp_secret_file`).
//!
//! Every TOTP step is accepted once per user, so a test logs in with a code
//! for a given step at most once, and uses the next step's code
//! (`oathtool -N '+30 seconds'`, accepted at once thanks to the skew) or a
//! recovery code when it needs another login.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    defence::with_limits,
    jump::{code_at, field, loopback, tunnel},
    util::{Gatehouse, Output, SshClient, TcpServer, Terminal, enrollment_secret, gatehouse, run},
};

const ISSUER: &str = "Example Jump";
const CONFIRM: &str = "Enter the code from your authenticator app to confirm: ";
const STARTING: &str = "gatehouse: sean has no second factor yet. Let's set one up.";

/// A config with an issuer: `users` as (name, clients whose keys they
/// use, provisioned `totp_secret_file`), all in group `dev`, which may
/// reach 127.0.0.1:`port`.
fn config(mfa: &str, users: &[(&str, &[&SshClient], Option<&Path>)], port: u16) -> String {
    let mut yaml = format!(
        "state_dir: state\nlog: {{ format: json }}\njump:\n  listen: [\"127.0.0.1:0\"]\n  \
         mfa: {mfa}\n  totp: {{ issuer: \"{ISSUER}\" }}\n  users:\n"
    );
    for (name, clients, secret_file) in users {
        let keys: Vec<String> = clients
            .iter()
            .map(|c| format!("\"{}\"", c.public_key()))
            .collect();
        yaml.push_str(&format!(
            "    {name}:\n      keys: [{}]\n      groups: [dev]\n",
            keys.join(", ")
        ));
        if let Some(file) = secret_file {
            yaml.push_str(&format!("      totp_secret_file: \"{}\"\n", file.display()));
        }
    }
    yaml.push_str(&format!(
        "  groups:\n    dev: {{ allow: [\"127.0.0.0/8:{port}\"] }}\n"
    ));
    yaml
}

/// `yaml` with loopback trusted (never rate-limited or banned): for tests
/// whose many refused codes from 127.0.0.1 are about the per-user limit,
/// which holds whatever the source, trusted or not.
fn trusting_loopback(yaml: &str) -> String {
    with_limits(yaml, "trusted: [\"127.0.0.0/8\"]")
}

/// One user `sean` without an enrollment, who may reach `echo`; the client
/// is pointed at the jump host as the alias `jump`.
fn sean(mfa: &str, echo: &TcpServer) -> (Gatehouse, SshClient) {
    let mut client = SshClient::new();
    let g = Gatehouse::start(&config(mfa, &[("sean", &[&client], None)], echo.port()));
    client.add_host("jump", g.jump(), "sean");
    (g, client)
}

/// `ssh -tt jump`: a terminal even though stdin is a pipe the test types into.
pub(crate) fn terminal(client: &SshClient) -> Terminal {
    Terminal::start(client.ssh().args(["-tt", "jump"]))
}

/// What the enrollment screen showed.
pub(crate) struct Screen {
    /// Everything up to the prompt, without `\r`.
    text: String,
    pub(crate) secret: String,
    uri: String,
    qr: Vec<String>,
}

/// Wait for the enrollment screen's prompt and pick the screen apart.
pub(crate) fn enrollment_screen(t: &mut Terminal) -> Screen {
    let text = t.expect(CONFIRM).replace('\r', "");
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line on the screen:\n{text}"))
            .trim()
            .to_owned()
    };
    let secret = after("Or type the secret into the app: ");
    let uri = after("URI: ");
    let qr = text
        .lines()
        .skip_while(|l| !l.starts_with("Scan this QR code"))
        .skip(1)
        .take_while(|l| !l.starts_with("Or type the secret"))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    Screen {
        text,
        secret,
        uri,
        qr,
    }
}

/// `xxxxx-xxxxx` over a-z0-9.
fn is_recovery_code(s: &str) -> bool {
    s.len() == 11
        && s.char_indices().all(|(i, c)| {
            if i == 5 {
                c == '-'
            } else {
                c.is_ascii_lowercase() || c.is_ascii_digit()
            }
        })
}

/// The recovery codes listed in `text`, one per line.
fn recovery_codes(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| is_recovery_code(l))
        .map(str::to_owned)
        .collect()
}

/// A code that is right for no step in the window around now.
pub(crate) fn wrong_code(secret: &str) -> String {
    let window: Vec<String> = [
        "-60 seconds",
        "-30 seconds",
        "now",
        "+30 seconds",
        "+60 seconds",
    ]
    .iter()
    .map(|when| code_at(secret, when))
    .collect();
    ["000000", "111111", "222222", "333333", "444444", "555555"]
        .iter()
        .find(|c| !window.iter().any(|w| w == *c))
        .map(|c| (*c).to_owned())
        .expect("six distinct codes cannot all be in a five-step window")
}

/// Enroll over `ssh -tt` with the right code; the recovery codes shown.
fn self_enroll(client: &SshClient) -> Vec<String> {
    let mut t = terminal(client);
    let screen = enrollment_screen(&mut t);
    t.type_line(&code_at(&screen.secret, "now"));
    t.expect("Enrolled.");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(0), "{out}");
    let shown = out.stdout().replace('\r', "");
    let after = shown.split("Enrolled.").nth(1).unwrap_or_default();
    let codes = recovery_codes(after);
    assert_eq!(codes.len(), 8, "{out}");
    codes
}

/// `gatehouse totp ...` output as text, with its exit code.
fn cli(out: &std::process::Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn state_dir(g: &Gatehouse) -> PathBuf {
    g.dir.path().join("state")
}

/// Every file and folder under `dir`, recursively.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read state dir") {
        let path = entry.expect("dir entry").path();
        found.push(path.clone());
        if std::fs::symlink_metadata(&path).expect("stat").is_dir() {
            walk(&path, found);
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// A random base32 secret of 160 bits, as configuration management would write.
fn random_base32() -> String {
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..32)
        .map(|_| char::from(B32[usize::from(rand::random::<u8>() % 32)]))
        .collect()
}

fn is_replay(v: &Value) -> bool {
    v["result"] == "rejected" && v["detail"] == "code already used (replay)"
}

fn count(g: &Gatehouse, event: &str, pred: impl Fn(&Value) -> bool) -> usize {
    g.audits(event).iter().filter(|v| pred(v)).count()
}

fn refused_for_no_second_factor(out: &Output, g: &Gatehouse) {
    out.failure()
        .stderr_has("administratively prohibited")
        .stderr_has(&format!(
            "no second factor yet; set it up in a terminal first: ssh -p {} sean@127.0.0.1",
            g.jump().port()
        ));
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn self_enrollment_shows_a_qr_code_and_a_right_code_enrolls() {
    let echo = TcpServer::echo();
    let (g, client) = sean("required", &echo);
    let port = g.jump().port();

    // Before enrolling: the key alone gets in, but only to enroll.
    let out = tunnel(&client, &loopback(echo.port()), b"x");
    refused_for_no_second_factor(&out, &g);
    out.stderr_has("using \"publickey\".");
    let auth = g.audit("auth", |v| v["result"] == "enroll_only");
    assert_eq!(
        (field(&auth, "user"), field(&auth, "method")),
        ("sean", "publickey"),
        "{auth}"
    );
    assert!(
        client.prompts().is_empty(),
        "no code asked: {:?}",
        client.prompts()
    );
    let shell = run(client.ssh().args(["-T", "jump"]), b"");
    assert_eq!(shell.status.code(), Some(1), "{shell}");
    shell.stderr_has(&format!(
        "gatehouse: sean has no second factor yet. Set it up in a terminal: ssh -p {port} sean@127.0.0.1"
    ));

    // The screen.
    let mut t = terminal(&client);
    let screen = enrollment_screen(&mut t);
    assert!(screen.text.contains(STARTING), "{}", screen.text);
    assert!(
        screen
            .text
            .contains(&format!("issuer: {ISSUER}    account: sean")),
        "{}",
        screen.text
    );
    assert_eq!(
        screen.secret.len(),
        32,
        "160 bits in base32: {}",
        screen.secret
    );
    assert!(
        screen
            .secret
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
        "{}",
        screen.secret
    );
    assert!(
        screen.uri.starts_with(&format!(
            "otpauth://totp/Example%20Jump:sean?secret={}",
            screen.secret
        )),
        "{}",
        screen.uri
    );
    assert!(
        screen.uri.contains("&issuer=Example%20Jump"),
        "{}",
        screen.uri
    );
    assert!(screen.qr.len() >= 20, "a QR code: {}", screen.text);
    for line in &screen.qr {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
        assert!(
            line.chars().all(|c| matches!(c, ' ' | '█' | '▀' | '▄')),
            "not UTF-8 half blocks: {line:?}"
        );
    }
    let started = g.audit("totp", |v| v["action"] == "enrollment_started");
    assert_eq!(started["user"], "sean", "{started}");

    // A wrong code: told so, and asked again.
    t.type_line(&wrong_code(&screen.secret));
    t.expect("That code is not right (check the app's clock). 2 tries left.");
    t.expect(CONFIRM);
    g.audit("totp", |v| {
        v["action"] == "enrollment_wrong_code" && v["user"] == "sean"
    });

    // The right code: enrolled, recovery codes shown once, session over.
    let code = code_at(&screen.secret, "now");
    t.type_line(&code);
    t.expect("Enrolled.");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(0), "{out}");
    let shown = out.stdout().replace('\r', "");
    let after = shown.split("Enrolled.").nth(1).unwrap_or_default();
    let codes = recovery_codes(after);
    assert_eq!(codes.len(), 8, "eight recovery codes, one per line: {out}");
    let mut distinct = codes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "{codes:?}");
    assert!(after.contains("Store them safely"), "{out}");
    assert!(
        after.contains(&format!("ssh -J sean@127.0.0.1:{port} TARGET")),
        "{out}"
    );
    let enrolled = g.audit("totp", |v| v["action"] == "enrolled");
    assert_eq!(enrolled["user"], "sean", "{enrolled}");
    assert!(
        g.audits("totp")
            .iter()
            .all(|v| v["action"] != "enrollment_failed" && v["action"] != "enrollment_aborted"),
        "{:?}",
        g.audits("totp")
    );
    let (status, stdout, stderr) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("8 recovery codes left"), "{stdout}");
    assert!(stdout.contains("secret in state_dir"), "{stdout}");

    // The confirming code's step is used: the same code again is a replay.
    client.answer_with(&code);
    let replay = tunnel(&client, &loopback(echo.port()), b"x");
    replay
        .failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("Permission denied");
    g.audit("auth", is_replay);

    // The next step's code: key + code, and tunnels work now.
    client.answer_with(&code_at(&screen.secret, "+30 seconds"));
    let out = tunnel(&client, &loopback(echo.port()), b"enrolled now\n");
    out.success()
        .stderr_has("Authenticated using \"publickey\" with partial success.");
    assert_eq!(out.stdout(), "enrolled now\n", "{out}");
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(accepted["method"], "keyboard-interactive", "{accepted}");
    assert!(
        field(&accepted, "detail").starts_with("totp step "),
        "{accepted}"
    );
    g.audit("tunnel_opened", |v| v["user"] == "sean");
}

#[test]
fn wrong_codes_ctrl_d_and_eof_store_nothing() {
    let echo = TcpServer::echo();
    let (g, client) = sean("required", &echo);

    let mut t = terminal(&client);
    let screen = enrollment_screen(&mut t);
    let wrong = wrong_code(&screen.secret);
    t.type_line(&wrong);
    t.expect("2 tries left.");
    t.expect(CONFIRM);
    t.type_line(&wrong);
    t.expect("1 tries left.");
    t.expect(CONFIRM);
    t.type_line(&wrong);
    t.expect("Nothing was stored");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(!out.stdout().contains("Enrolled."), "{out}");
    let failed = g.audit("totp", |v| v["action"] == "enrollment_failed");
    assert_eq!(failed["user"], "sean", "{failed}");
    assert_eq!(
        count(&g, "totp", |v| v["action"] == "enrollment_wrong_code"),
        2
    );

    // Ctrl-D in the middle of typing a code.
    let mut t = terminal(&client);
    enrollment_screen(&mut t);
    t.send(b"12\x04");
    t.expect("Aborted; nothing was stored.");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(1), "{out}");
    g.audit("totp", |v| v["action"] == "enrollment_aborted");

    // The input ends (EOF) at the prompt.
    let mut t = terminal(&client);
    enrollment_screen(&mut t);
    t.close_stdin();
    t.expect("Aborted; nothing was stored.");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(1), "{out}");
    g.audit_nth(1, "totp", |v| v["action"] == "enrollment_aborted");

    // Nothing was stored: still not enrolled, still enroll-only.
    let (status, stdout, stderr) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("sean: not enrolled"), "{stdout}");
    assert!(!state_dir(&g).join("totp/sean").exists());
    let out = tunnel(&client, &loopback(echo.port()), b"x");
    refused_for_no_second_factor(&out, &g);
    assert!(
        g.audits("totp").iter().all(|v| v["action"] != "enrolled"),
        "{:?}",
        g.audits("totp")
    );
}

#[test]
fn recovery_codes_work_once_each_and_are_stored_only_hashed() {
    let echo = TcpServer::echo();
    let (g, client) = sean("required", &echo);
    let codes = self_enroll(&client);
    let recovered = |left: usize| {
        let detail = format!("recovery code used; {left} left");
        g.audit("auth", move |v| {
            v["result"] == "accepted" && v["detail"] == detail
        })
    };

    // A recovery code in place of a TOTP code.
    client.answer_with(&codes[0]);
    let out = tunnel(&client, &loopback(echo.port()), b"recovered\n");
    out.success();
    assert_eq!(out.stdout(), "recovered\n", "{out}");
    let prompts = client.prompts();
    assert!(
        prompts.len() == 1 && prompts[0].ends_with("Verification code: "),
        "{prompts:?}"
    );
    let accepted = recovered(7);
    assert_eq!(
        (field(&accepted, "user"), field(&accepted, "method")),
        ("sean", "keyboard-interactive"),
        "{accepted}"
    );
    assert_eq!(accepted["fingerprint"], client.fingerprint(), "{accepted}");
    let (status, stdout, stderr) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("7 recovery codes left"), "{stdout}");

    // ...only once.
    let again = tunnel(&client, &loopback(echo.port()), b"x");
    again.failure().stderr_has("Permission denied");
    assert!(again.stdout.is_empty(), "{again}");
    g.audit("auth", |v| {
        v["result"] == "rejected" && v["detail"] == "wrong code"
    });

    // Case and the dash are forgiven.
    client.answer_with(&codes[1].to_uppercase());
    tunnel(&client, &loopback(echo.port()), b"upper\n").success();
    recovered(6);
    client.answer_with(&codes[2].replace('-', ""));
    tunnel(&client, &loopback(echo.port()), b"no dash\n").success();
    recovered(5);
    let (status, stdout, _) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(0), "{stdout}");
    assert!(stdout.contains("5 recovery codes left"), "{stdout}");
    assert_eq!(count(&g, "tunnel_opened", |_| true), 3);

    // On disk: no code in clear anywhere, and nothing readable by others.
    let state = state_dir(&g);
    assert_eq!(mode(&state), 0o700, "{}", state.display());
    let mut found = Vec::new();
    walk(&state, &mut found);
    assert!(found.iter().any(|p| p.ends_with("totp/sean")), "{found:?}");
    for path in &found {
        if path.is_dir() {
            assert_eq!(mode(path), 0o700, "{}", path.display());
            continue;
        }
        assert_eq!(mode(path), 0o600, "{}", path.display());
        let text = String::from_utf8_lossy(&std::fs::read(path).expect("read")).to_lowercase();
        for code in &codes {
            for form in [code.clone(), code.replace('-', "")] {
                assert!(
                    !text.contains(&form),
                    "recovery code {form} in clear in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn an_enrolled_user_gets_no_terminal_and_totp_reset_reopens_enrollment() {
    let echo = TcpServer::echo();
    let (g, client) = sean("required", &echo);

    // The operator enrolls sean; recovery codes come with it now.
    let (status, stdout, stderr) = cli(&g.totp("enroll", "sean"));
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let secret = enrollment_secret(&stdout);
    assert!(stdout.contains("Recovery codes"), "{stdout}");
    let after = stdout.split("Recovery codes").nth(1).unwrap_or_default();
    assert_eq!(recovery_codes(after).len(), 8, "{stdout}");
    let (status, stdout, _) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(0), "{stdout}");
    assert!(stdout.contains("8 recovery codes left"), "{stdout}");

    // Key + code, then no terminal: a pty serves self-enrollment only.
    client.answer_with(&code_at(&secret, "now"));
    let pty = run(client.ssh().args(["-tt", "jump"]), b"");
    pty.failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("PTY allocation request failed");
    assert!(!pty.stdout().contains("Let's set one up"), "{pty}");
    g.audit("auth", |v| v["result"] == "accepted");
    let refused = g.audit("request_refused", |v| v["request"] == "pty");
    assert_eq!(refused["user"], "sean", "{refused}");
    assert!(
        g.audits("totp").is_empty(),
        "no enrollment for an enrolled user: {:?}",
        g.audits("totp")
    );

    client.answer_with(&code_at(&secret, "+30 seconds"));
    let out = tunnel(&client, &loopback(echo.port()), b"tunnel\n");
    out.success();
    assert_eq!(out.stdout(), "tunnel\n", "{out}");

    // Reset: the running server takes it at once.
    let (status, stdout, stderr) = cli(&g.totp("reset", "sean"));
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("sean: enrollment removed"), "{stdout}");
    let (status, stdout, _) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(3), "{stdout}");
    assert!(stdout.contains("sean: not enrolled"), "{stdout}");
    let (status, stdout, _) = cli(&g.totp("reset", "sean"));
    assert_eq!(status, Some(0), "{stdout}");
    assert!(
        stdout.contains("was not enrolled; nothing to do"),
        "{stdout}"
    );

    let prompts_before = client.prompts().len();
    let out = tunnel(&client, &loopback(echo.port()), b"x");
    refused_for_no_second_factor(&out, &g);
    assert_eq!(client.prompts().len(), prompts_before, "no code asked");
    let auth = g.audit("auth", |v| v["result"] == "enroll_only");
    assert_eq!(auth["user"], "sean", "{auth}");

    let mut t = terminal(&client);
    let screen = enrollment_screen(&mut t);
    assert!(screen.text.contains(STARTING), "{}", screen.text);
    assert_ne!(screen.secret, secret, "a new secret");
    t.close_stdin();
    t.expect("Aborted; nothing was stored.");
    assert_eq!(t.finish().status.code(), Some(1));
}

#[test]
fn with_mfa_optional_unenrolled_users_tunnel_and_enrolled_ones_need_the_code() {
    let echo = TcpServer::echo();
    let (g, client) = sean("optional", &echo);

    let out = tunnel(&client, &loopback(echo.port()), b"key alone\n");
    out.success().stderr_has("using \"publickey\".");
    assert_eq!(out.stdout(), "key alone\n", "{out}");
    assert!(client.prompts().is_empty(), "{:?}", client.prompts());
    let auth = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(
        (field(&auth, "method"), field(&auth, "detail")),
        ("publickey", "no TOTP enrollment"),
        "{auth}"
    );

    // An interactive login still offers enrollment.
    let mut t = terminal(&client);
    let screen = enrollment_screen(&mut t);
    assert!(screen.text.contains(STARTING), "{}", screen.text);
    t.type_line(&code_at(&screen.secret, "now"));
    t.expect("Enrolled.");
    let out = t.finish();
    assert_eq!(out.status.code(), Some(0), "{out}");
    g.audit("totp", |v| v["action"] == "enrolled");

    // Enrolled: the key alone is no longer enough.
    client.answer_with(&wrong_code(&screen.secret));
    let wrong = tunnel(&client, &loopback(echo.port()), b"x");
    wrong
        .failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("Permission denied");
    assert!(wrong.stdout.is_empty(), "{wrong}");
    g.audit("auth", |v| {
        v["result"] == "rejected" && v["detail"] == "wrong code"
    });

    client.answer_with(&code_at(&screen.secret, "+30 seconds"));
    let right = tunnel(&client, &loopback(echo.port()), b"with a code\n");
    right.success().stderr_has("partial success");
    assert_eq!(right.stdout(), "with a code\n", "{right}");
    g.audit("auth", |v| {
        v["result"] == "accepted" && v["method"] == "keyboard-interactive"
    });
    assert_eq!(count(&g, "tunnel_opened", |_| true), 2);
}

#[test]
fn three_wrong_codes_lock_the_user_whatever_the_source() {
    let echo = TcpServer::echo();
    // sean has two laptops (two keys); bob is someone else.
    let mut laptop = SshClient::new();
    let mut desktop = SshClient::new();
    let mut bob = SshClient::new();
    let g = Gatehouse::start(&trusting_loopback(&config(
        "required",
        &[("sean", &[&laptop, &desktop], None), ("bob", &[&bob], None)],
        echo.port(),
    )));
    laptop.add_host("jump", g.jump(), "sean");
    desktop.add_host("jump", g.jump(), "sean");
    bob.add_host("jump", g.jump(), "bob");
    let secret = g.enroll("sean");
    let bobs = g.enroll("bob");
    let wrong = wrong_code(&secret);
    let wrong_codes = || {
        count(&g, "auth", |v| {
            v["user"] == "sean" && v["result"] == "rejected" && v["detail"] == "wrong code"
        })
    };
    let is_limited = |v: &Value| {
        v["user"] == "sean"
            && v["result"] == "rejected"
            && v["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("per-user code limit"))
    };

    // Two wrong codes on one connection from the laptop...
    laptop.answer_with(&wrong);
    let out = run(
        laptop.ssh().args([
            "-o",
            "NumberOfPasswordPrompts=2",
            "-W",
            &loopback(echo.port()),
            "jump",
        ]),
        b"x",
    );
    out.failure().stderr_has("Permission denied");
    assert_eq!(laptop.prompts().len(), 2, "{out}");
    crate::util::eventually("two wrong codes audited", || wrong_codes() == 2);
    // ...and a third from the desktop, on another connection.
    desktop.answer_with(&wrong);
    tunnel(&desktop, &loopback(echo.port()), b"x")
        .failure()
        .stderr_has("Permission denied");
    crate::util::eventually("three wrong codes audited", || wrong_codes() == 3);

    // Now even the right code is refused unchecked, from either machine.
    desktop.answer_with_totp(&secret);
    let out = tunnel(&desktop, &loopback(echo.port()), b"x");
    out.failure().stderr_has("Permission denied");
    assert!(out.stdout.is_empty(), "{out}");
    let limited = g.audit("auth", is_limited);
    assert_eq!(limited["fingerprint"], desktop.fingerprint(), "{limited}");
    laptop.answer_with_totp(&secret);
    tunnel(&laptop, &loopback(echo.port()), b"x")
        .failure()
        .stderr_has("Permission denied");
    let limited = g.audit_nth(1, "auth", is_limited);
    assert_eq!(limited["fingerprint"], laptop.fingerprint(), "{limited}");

    // The limit is sean's alone.
    bob.answer_with_totp(&bobs);
    let out = tunnel(&bob, &loopback(echo.port()), b"bob\n");
    out.success();
    assert_eq!(out.stdout(), "bob\n", "{out}");
    assert!(
        g.audits("auth")
            .iter()
            .all(|v| v["user"] != "sean" || v["result"] != "accepted"),
        "{:?}",
        g.audits("auth")
    );
    assert_eq!(count(&g, "tunnel_opened", |v| v["user"] == "sean"), 0);
}

#[test]
fn two_enrollments_at_once_the_first_confirmation_wins() {
    let echo = TcpServer::echo();
    let (g, client) = sean("required", &echo);

    let mut first = terminal(&client);
    let mut second = terminal(&client);
    let one = enrollment_screen(&mut first).secret;
    let two = enrollment_screen(&mut second).secret;
    assert_ne!(one, two, "each session shows its own secret");
    crate::util::eventually("both enrollments started", || {
        count(&g, "totp", |v| v["action"] == "enrollment_started") == 2
    });

    first.type_line(&code_at(&one, "now"));
    first.expect("Enrolled.");
    let out = first.finish();
    assert_eq!(out.status.code(), Some(0), "{out}");
    g.audit("totp", |v| v["action"] == "enrolled");

    // The second session's code is right for its own secret, too late.
    second.type_line(&code_at(&two, "now"));
    second.expect("Another session enrolled you first; this secret was not stored.");
    let out = second.finish();
    assert!(!out.stdout().contains("Enrolled."), "{out}");
    let refused = g.audit("totp", |v| v["action"] == "enrollment_refused");
    assert_eq!(refused["user"], "sean", "{refused}");
    assert_eq!(count(&g, "totp", |v| v["action"] == "enrolled"), 1);

    // The stored secret is the first one.
    client.answer_with(&code_at(&two, "+30 seconds"));
    tunnel(&client, &loopback(echo.port()), b"x")
        .failure()
        .stderr_has("Permission denied");
    g.audit("auth", |v| {
        v["result"] == "rejected" && v["detail"] == "wrong code"
    });
    client.answer_with(&code_at(&one, "+30 seconds"));
    let out = tunnel(&client, &loopback(echo.port()), b"first wins\n");
    out.success();
    assert_eq!(out.stdout(), "first wins\n", "{out}");
}

#[test]
fn a_provisioned_secret_skips_self_enrollment_and_keeps_replay_state_here() {
    let echo = TcpServer::echo();
    let mut client = SshClient::new();
    // Where configuration management puts it, outside the state dir.
    let provisioned = tempfile::tempdir().expect("tempdir");
    let secret_file = provisioned.path().join("sean.totp");
    let secret = random_base32();
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    let yaml = config(
        "required",
        &[("sean", &[&client], Some(&secret_file))],
        echo.port(),
    );

    // Readable by others: the config is refused.
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let checking = tempfile::tempdir().expect("tempdir");
    std::fs::write(checking.path().join("g.yaml"), &yaml).expect("write config");
    let (status, stdout, stderr) = cli(&gatehouse(
        &["check", "--config", "g.yaml"],
        checking.path(),
    ));
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "jump.users.sean.totp_secret_file: {}: mode is 0644; it must be 0600 or 0400",
            secret_file.display()
        )),
        "{stderr}"
    );
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let (status, stdout, stderr) = cli(&gatehouse(
        &["check", "--config", "g.yaml"],
        checking.path(),
    ));
    assert_eq!(status, Some(0), "{stdout}{stderr}");

    let g = Gatehouse::start(&yaml);
    client.add_host("jump", g.jump(), "sean");
    let (status, stdout, stderr) = cli(&g.totp("status", "sean"));
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("secret from totp_secret_file"), "{stdout}");
    let (status, stdout, stderr) = cli(&g.totp("enroll", "sean"));
    assert_ne!(status, Some(0), "nothing to enroll: {stdout}{stderr}");
    assert!(
        stderr.contains("provisioned by totp_secret_file"),
        "{stderr}"
    );

    // Key + code from the provisioned secret right away; no enrollment screen.
    let code = code_at(&secret, "now");
    client.answer_with(&code);
    let pty = run(client.ssh().args(["-tt", "jump"]), b"");
    pty.failure()
        .stderr_has("Authenticated using \"publickey\" with partial success.")
        .stderr_has("PTY allocation request failed");
    assert!(!pty.stdout().contains("Let's set one up"), "{pty}");
    let accepted = g.audit("auth", |v| v["result"] == "accepted");
    assert_eq!(accepted["method"], "keyboard-interactive", "{accepted}");
    g.audit("request_refused", |v| v["request"] == "pty");

    // The used step is kept on this host...
    let replay = tunnel(&client, &loopback(echo.port()), b"x");
    replay.failure().stderr_has("Permission denied");
    g.audit("auth", is_replay);
    client.answer_with(&code_at(&secret, "+30 seconds"));
    let out = tunnel(&client, &loopback(echo.port()), b"provisioned\n");
    out.success();
    assert_eq!(out.stdout(), "provisioned\n", "{out}");

    // ...without copying the secret there.
    let state_file = state_dir(&g).join("totp/sean");
    assert_eq!(mode(&state_file), 0o600, "{}", state_file.display());
    let state = std::fs::read_to_string(&state_file).expect("read replay state");
    assert!(
        !state.to_uppercase().contains(&secret),
        "the provisioned secret is copied into {}: {state}",
        state_file.display()
    );
    assert!(state.contains("last_step"), "{state}");
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("read secret"),
        format!("{secret}\n"),
        "the provisioned file is left alone"
    );
    assert!(
        g.audits("auth")
            .iter()
            .all(|v| v["result"] != "enroll_only"),
        "{:?}",
        g.audits("auth")
    );
    assert!(g.audits("totp").is_empty(), "{:?}", g.audits("totp"));
}

#[test]
fn codes_sent_in_parallel_do_not_slip_past_the_per_user_limit() {
    let echo = TcpServer::echo();
    let mut client = SshClient::new();
    let g = Gatehouse::start(&trusting_loopback(&config(
        "required",
        &[("sean", &[&client], None)],
        echo.port(),
    )));
    client.add_host("jump", g.jump(), "sean");
    g.enroll("sean");
    // Recovery-shaped guesses: each is checked against every stored hash,
    // slowly, so the connections overlap while one is being checked.
    client.answer_with("aaaaa-aaaaa");
    // The limit's window (30 s) starts at its first wrong code, which is
    // checked after this instant: a code checked 30 s or more after it may
    // have begun a new window, and is judged so, whatever the machine's speed.
    let started = std::time::SystemTime::now();
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                tunnel(&client, &loopback(echo.port()), b"x")
                    .failure()
                    .stderr_has("Permission denied");
            });
        }
    });
    crate::util::eventually("six codes refused", || {
        count(&g, "auth", |v| {
            v["method"] == "keyboard-interactive" && v["result"] == "rejected"
        }) == 6
    });
    let auths = g.audits("auth");
    let checked: Vec<&Value> = auths
        .iter()
        .filter(|v| v["detail"] == "wrong code")
        .collect();
    let limited = count(&g, "auth", |v| {
        v["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("per-user code limit"))
    });
    assert_eq!(checked.len() + limited, 6, "{auths:?}");
    // The first three are checked; a fourth only in a new window, never
    // while the first is open (the race this test is for). A code's line is
    // logged after its check began, so at most three lines stamped within
    // 30 s of the burst's start say "wrong code".
    assert!(checked.len() >= 3, "{auths:?}");
    let window = std::time::Duration::from_secs(30);
    let in_first_window = checked
        .iter()
        .map(|v| humantime::parse_rfc3339(field(v, "timestamp")).expect("timestamp"))
        .filter(|at| at.duration_since(started).map_or(true, |d| d < window))
        .count();
    assert!(in_first_window <= 3, "{auths:?}");
    assert_eq!(count(&g, "auth", |v| v["result"] == "accepted"), 0);
}
