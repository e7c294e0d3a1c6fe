//! Live authenticated sessions and their tunnels, for offboarding: who is
//! logged in with which key and factors, what each tunnel reaches, and how
//! to cut them when a reload (or `gatehouse totp reset`) takes that away.
//!
//! Owns the registry and the rules "does this login still stand" and "is
//! this tunnel still granted"; must not do I/O or talk SSH — cutting is a
//! cancelled token the connection or tunnel watches.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use gatehouse_config::{JumpConfig, Mfa};
use russh::keys::ssh_key::{Certificate, public::KeyData};
use tokio_util::sync::CancellationToken;

use crate::{
    audit::{self, Who},
    auth::{Access, Credential},
    krl::Revocations,
    policy,
};

/// How a session logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Factors {
    /// The key alone (not enrolled: enrollment only, or `mfa: optional`).
    Key,
    /// The key and a TOTP or recovery code.
    KeyAndCode,
    /// A `verify-required` security key that verified its user (PIN or
    /// fingerprint): two factors in one signature, no code.
    VerifiedSecurityKey,
    /// The key, within an MFA grace begun by a code (issue 28).
    KeyAndGrace,
}

impl Factors {
    /// Does the login stand on a TOTP code (typed now, or within the
    /// grace it began)? A reset of the enrollment takes it away.
    fn used_a_code(self) -> bool {
        matches!(self, Factors::KeyAndCode | Factors::KeyAndGrace)
    }
}

/// One login, as registered.
pub(crate) struct Login {
    pub who: Who,
    pub user: String,
    /// What completed the login (the latest attempt's, never an earlier
    /// one's): what [`lost`] judges.
    pub credential: Credential,
    pub factors: Factors,
    pub access: Access,
    pub cut: CancellationToken,
}

/// Why a session no longer stands under `jump`, beyond its user and key:
/// `mfa: required` now, and it tunnels on the key alone.
/// Also: a login that a `verify-required` key made whole, whose key line
/// no longer says so (it would need the code now). A certificate's
/// `verify-required` cannot change.
fn lost_by_policy(jump: Option<&JumpConfig>, login: &Login) -> Option<&'static str> {
    let required = jump.is_some_and(|j| j.mfa == Mfa::Required);
    if required && login.factors == Factors::Key && login.access == Access::Tunnels {
        return Some("mfa is now required and this session has no second factor");
    }
    let still_whole = || match &login.credential {
        Credential::Key(key) => jump.and_then(|j| j.user(&login.user)).is_some_and(|u| {
            u.keys
                .iter()
                .any(|k| k.key_data() == key && k.whole_login())
        }),
        Credential::Certificate(_) => true,
    };
    (login.factors == Factors::VerifiedSecurityKey && !still_whole())
        .then_some("the key line no longer says verify-required and this session gave no code")
}

/// One open tunnel, as registered.
struct Tunnel {
    who: Who,
    user: String,
    host: String,
    port: u16,
    dialled: IpAddr,
    cut: CancellationToken,
}

/// Is this tunnel still granted under `jump`: the same decision as when it
/// was opened, on the address it dialled.
fn still_granted(jump: Option<&JumpConfig>, t: &Tunnel, own: &[IpAddr]) -> bool {
    jump.and_then(|j| Some((j, j.user(&t.user)?)))
        .is_some_and(|(j, u)| policy::decide_with(j, u, &t.host, t.port, &[t.dialled], own).is_ok())
}

/// Why a live session lost its access, or `None` if it keeps it, judged
/// by the credential that completed its login.
pub(crate) fn lost(
    jump: Option<&JumpConfig>,
    user: &str,
    credential: &Credential,
    revoked: &Revocations,
) -> Option<&'static str> {
    match credential {
        Credential::Key(key) => lost_access(jump, user, key, revoked),
        Credential::Certificate(cert) => lost_certificate(jump, user, cert, revoked),
    }
}

/// Why a key login no longer stands: the user and the exact key must still
/// be in `jump`, and the key not in the revocation list.
fn lost_access(
    jump: Option<&JumpConfig>,
    user: &str,
    key: &KeyData,
    revoked: &Revocations,
) -> Option<&'static str> {
    match jump.and_then(|j| j.user(user)) {
        None => Some("user removed from the configuration"),
        Some(u) if !u.keys.iter().any(|k| k.key_data() == key) => {
            Some("key removed from the configuration")
        }
        Some(_) if revoked.key(key) => Some("key revoked (jump.user_ca.revoked_keys_file)"),
        Some(_) => None,
    }
}

/// Why a certificate login no longer stands: its user, the user no longer
/// among its principals (a certificate counts for nobody else), its CA
/// gone from `jump.user_ca`, or the certificate now revoked.
fn lost_certificate(
    jump: Option<&JumpConfig>,
    user: &str,
    cert: &Certificate,
    revoked: &Revocations,
) -> Option<&'static str> {
    let Some(jump) = jump.filter(|j| j.user(user).is_some()) else {
        return Some("user removed from the configuration");
    };
    if !cert.valid_principals().iter().any(|p| p == user) {
        return Some("the user is not among the certificate's principals");
    }
    let trusted = jump
        .user_ca
        .as_ref()
        .is_some_and(|ca| ca.keys.iter().any(|k| k.key_data() == cert.signature_key()));
    if !trusted {
        return Some("certificate authority removed from jump.user_ca");
    }
    revoked
        .certificate(cert)
        .map(|_| "certificate revoked (jump.user_ca.revoked_keys_file)")
}

/// Every authenticated connection of one server, and every open tunnel.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<u64, Login>>,
    tunnels: Mutex<HashMap<u64, Tunnel>>,
    next_tunnel: AtomicU64,
}

impl Sessions {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Login>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tunnels(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tunnel>> {
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register an open tunnel; returns its id (for [`Sessions::tunnel_closed`])
    /// and the token that cuts it. At most `max_channels` per connection, so
    /// bounded like the connections.
    pub(crate) fn tunnel_opened(
        &self,
        who: &Who,
        user: &str,
        host: &str,
        port: u16,
        dialled: IpAddr,
    ) -> (u64, CancellationToken) {
        let id = self.next_tunnel.fetch_add(1, Ordering::Relaxed);
        let cut = CancellationToken::new();
        self.tunnels().insert(
            id,
            Tunnel {
                who: who.clone(),
                user: user.to_owned(),
                host: host.to_owned(),
                port,
                dialled,
                cut: cut.clone(),
            },
        );
        (id, cut)
    }

    pub(crate) fn tunnel_closed(&self, id: u64) {
        self.tunnels().remove(&id);
    }

    /// Users with a live session that logged in with a code: `gatehouse
    /// totp reset` (from another process) removes their enrollment, which
    /// [`Sessions::enrollment_gone`] then acts on.
    pub(crate) fn users_with_codes(&self) -> BTreeSet<String> {
        self.live()
            .values()
            .filter(|l| l.factors.used_a_code())
            .map(|l| l.user.clone())
            .collect()
    }

    /// `user`'s enrollment is gone: cut their sessions that used a code.
    pub(crate) fn enrollment_gone(&self, user: &str) {
        for login in self.live().values() {
            if login.user == user && login.factors.used_a_code() && !login.cut.is_cancelled() {
                audit::offboarded(&login.who, user, "TOTP enrollment reset");
                login.cut.cancel();
            }
        }
    }

    /// Add an authenticated connection, unless its user already has `cap`
    /// live ones: then false, and nothing is added. Counting and adding
    /// under one lock, so parallel logins cannot both take the last place.
    pub(crate) fn register(&self, login: Login, cap: usize) -> bool {
        let mut live = self.live();
        if live.values().filter(|s| s.user == login.user).count() >= cap {
            return false;
        }
        live.insert(login.who.conn, login);
        true
    }

    /// The connection ended.
    pub(crate) fn remove(&self, conn: u64) {
        self.live().remove(&conn);
    }

    /// Cut (and audit) every session whose user or key is gone from `jump`
    /// or that no longer meets its `mfa`, and every tunnel no grant covers
    /// any more.
    pub(crate) fn offboard(
        &self,
        jump: Option<&JumpConfig>,
        own: &[IpAddr],
        revoked: &Revocations,
    ) {
        // Connections cut whole (now or before): their tunnels go with them
        // and need no word of their own.
        let mut cut_whole = BTreeSet::new();
        for session in self.live().values() {
            let reason = lost(jump, &session.user, &session.credential, revoked)
                .or_else(|| lost_by_policy(jump, session));
            if let Some(reason) = reason
                && !session.cut.is_cancelled()
            {
                audit::offboarded(&session.who, &session.user, reason);
                session.cut.cancel();
            }
            if session.cut.is_cancelled() {
                cut_whole.insert(session.who.conn);
            }
        }
        for tunnel in self.tunnels().values() {
            if cut_whole.contains(&tunnel.who.conn)
                || tunnel.cut.is_cancelled()
                || still_granted(jump, tunnel, own)
            {
                continue;
            }
            let reason = format!(
                "grant removed: {}:{} ({}) is no longer granted",
                audit::bounded(&tunnel.host),
                tunnel.port,
                tunnel.dialled
            );
            audit::offboarded(&tunnel.who, &tunnel.user, &reason);
            tunnel.cut.cancel();
        }
    }

    /// How many are live.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";
    const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIGmFfmwDxW3abdqmAsES791/o5yRc7Kb13zMx2//79t kim@laptop";

    /// `ssh-keygen -s ca -I alice -n alice -z 5` (valid forever), and its CA.
    const CA: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHiwpelOt2q9rRIXXWxfvvr8ggERJx6vpeTtg1FCSkmj ca";
    const ALICE_CERT: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIDqccq4UtVTdadwqG+Cj2ndvd6AQxORB3J0qr5s324HWAAAAIKE+2XqtrczzRebHObPjCA7FXvxQq7hhJqMv5sW9iBHQAAAAAAAAAAUAAAABAAAABWFsaWNlAAAACQAAAAVhbGljZQAAAAAAAAAA//////////8AAAAAAAAAggAAABVwZXJtaXQtWDExLWZvcndhcmRpbmcAAAAAAAAAF3Blcm1pdC1hZ2VudC1mb3J3YXJkaW5nAAAAAAAAABZwZXJtaXQtcG9ydC1mb3J3YXJkaW5nAAAAAAAAAApwZXJtaXQtcHR5AAAAAAAAAA5wZXJtaXQtdXNlci1yYwAAAAAAAAAAAAAAMwAAAAtzc2gtZWQyNTUxOQAAACB4sKXpTrdqva0SF11sX776/IIBEScer6Xk7YNRQkpJowAAAFMAAAALc3NoLWVkMjU1MTkAAABAsrpkBXRqnhjHXGW1v3eTje7ontZMK/jDEPfBYgFxwCqVpjhE1aKd4uilQt4HbGjzTgOe8dp599mUE25kZdO7DA== alice";

    fn jump(users: &str) -> gatehouse_config::Config {
        let yaml = format!("jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n{users}");
        gatehouse_config::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &yaml)
            .expect("config")
    }

    fn key(text: &str) -> KeyData {
        russh::keys::PublicKey::from_openssh(text)
            .expect("key")
            .key_data()
            .clone()
    }

    fn login(who: Who, user: &str, k: &str, factors: Factors, cut: CancellationToken) -> Login {
        Login {
            who,
            user: user.to_owned(),
            credential: Credential::Key(key(k)),
            factors,
            access: Access::Tunnels,
            cut,
        }
    }

    #[test]
    fn access_is_lost_with_the_user_or_the_key() {
        let both = jump(&format!(
            "    sean:\n      keys: [\"{KEY}\", \"{OTHER}\"]\n"
        ));
        let one = jump(&format!("    sean:\n      keys: [\"{OTHER}\"]\n"));
        let none = jump(&format!("    kim:\n      keys: [\"{KEY}\"]\n"));
        let clean = Revocations::default();
        let sean = Credential::Key(key(KEY));
        assert_eq!(lost(both.jump.as_ref(), "sean", &sean, &clean), None);
        assert_eq!(
            lost(one.jump.as_ref(), "sean", &sean, &clean),
            Some("key removed from the configuration")
        );
        assert_eq!(
            lost(none.jump.as_ref(), "sean", &sean, &clean),
            Some("user removed from the configuration")
        );
        assert_eq!(
            lost(None, "sean", &sean, &clean),
            Some("user removed from the configuration")
        );
        // A plain key listed in revoked_keys_file, as `ssh-keygen -k` or a
        // list of keys has it.
        let revoked = Revocations::parse(KEY.as_bytes()).expect("list");
        assert_eq!(
            lost(both.jump.as_ref(), "sean", &sean, &revoked),
            Some("key revoked (jump.user_ca.revoked_keys_file)")
        );
        assert_eq!(
            lost(
                both.jump.as_ref(),
                "sean",
                &Credential::Key(key(OTHER)),
                &revoked
            ),
            None
        );
    }

    #[test]
    fn a_certificate_counts_only_for_a_user_among_its_principals() {
        let users =
            format!("    alice:\n      keys: [\"{KEY}\"]\n    bob:\n      keys: [\"{OTHER}\"]\n");
        let yaml = format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  user_ca:\n    keys: [\"{CA}\"]\n  users:\n{users}"
        );
        let config = gatehouse_config::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &yaml)
            .expect("config");
        let with_ca = config.jump.as_ref();
        let clean = Revocations::default();
        let alice = Credential::Certificate(std::sync::Arc::new(
            Certificate::from_openssh(ALICE_CERT).expect("cert"),
        ));
        assert_eq!(lost(with_ca, "alice", &alice, &clean), None);
        // Registered as bob with alice's certificate (issue 23, item 2):
        // it never stood for bob.
        assert_eq!(
            lost(with_ca, "bob", &alice, &clean),
            Some("the user is not among the certificate's principals")
        );
        // Without its CA, alice's certificate stands for nobody.
        let no_ca = jump(&users);
        assert_eq!(
            lost(no_ca.jump.as_ref(), "alice", &alice, &clean),
            Some("certificate authority removed from jump.user_ca")
        );
    }

    #[test]
    fn offboarding_cuts_only_sessions_that_lost_access() {
        let sessions = Sessions::default();
        let who = |conn| Who {
            conn,
            peer: "127.0.0.1:1".parse().expect("addr"),
        };
        let (keep, cut) = (CancellationToken::new(), CancellationToken::new());
        assert!(sessions.register(
            login(who(1), "sean", OTHER, Factors::KeyAndCode, keep.clone()),
            16
        ));
        assert!(sessions.register(
            login(who(2), "sean", KEY, Factors::KeyAndCode, cut.clone()),
            16
        ));
        let config = jump(&format!("    sean:\n      keys: [\"{OTHER}\"]\n"));
        sessions.offboard(config.jump.as_ref(), &[], &Revocations::default());
        assert!(!keep.is_cancelled());
        assert!(cut.is_cancelled());
        sessions.remove(2);
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn a_user_has_at_most_cap_sessions() {
        let sessions = Sessions::default();
        let who = |conn| Who {
            conn,
            peer: "127.0.0.1:1".parse().expect("addr"),
        };
        let cut = CancellationToken::new;
        let sean = |conn| login(who(conn), "sean", KEY, Factors::KeyAndCode, cut());
        assert!(sessions.register(sean(1), 2));
        assert!(sessions.register(sean(2), 2));
        assert!(!sessions.register(sean(3), 2), "third refused");
        assert!(
            sessions.register(login(who(4), "kim", OTHER, Factors::Key, cut()), 2),
            "others unaffected"
        );
        sessions.remove(1);
        assert!(sessions.register(sean(5), 2), "a place came free");
    }

    #[test]
    fn a_whole_login_is_lost_when_its_line_drops_verify_required() {
        const SK: &str = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFvdtQeUWx266KKZfz1vZ6dje6krwWKqC2hegLlhodr1AAAABHNzaDo= sean@yubikey";
        let verified = jump(&format!(
            "    sean:\n      keys: [\"verify-required {SK}\"]\n"
        ));
        let touch = jump(&format!("    sean:\n      keys: [\"{SK}\"]\n"));
        let who = Who {
            conn: 1,
            peer: "127.0.0.1:1".parse().expect("addr"),
        };
        let whole = login(
            who,
            "sean",
            SK,
            Factors::VerifiedSecurityKey,
            CancellationToken::new(),
        );
        assert_eq!(lost_by_policy(verified.jump.as_ref(), &whole), None);
        assert_eq!(
            lost_by_policy(touch.jump.as_ref(), &whole),
            Some("the key line no longer says verify-required and this session gave no code")
        );
    }

    #[test]
    fn mfa_required_cuts_key_only_tunnel_sessions_and_removed_grants_cut_tunnels() {
        let sessions = Sessions::default();
        let who = |conn| Who {
            conn,
            peer: "127.0.0.1:1".parse().expect("addr"),
        };
        let (key_only, with_code) = (CancellationToken::new(), CancellationToken::new());
        assert!(sessions.register(
            login(who(1), "sean", KEY, Factors::Key, key_only.clone()),
            16
        ));
        assert!(sessions.register(
            login(who(2), "sean", KEY, Factors::KeyAndCode, with_code.clone()),
            16
        ));
        let users = format!("    sean:\n      keys: [\"{KEY}\"]\n      groups: [dev]\n");
        let with = |mfa: &str, allow: &str| {
            let yaml = format!(
                "jump:\n  listen: [\"127.0.0.1:0\"]\n  mfa: {mfa}\n  users:\n{users}  groups:\n    dev:\n      allow: [{allow}]\n"
            );
            gatehouse_config::parse(std::path::Path::new("/etc/gatehouse/g.yaml"), &yaml)
                .expect("config")
        };
        let (ssh, web) = (
            sessions.tunnel_opened(
                &who(2),
                "sean",
                "10.0.0.5",
                22,
                "10.0.0.5".parse().expect("ip"),
            ),
            sessions.tunnel_opened(
                &who(2),
                "sean",
                "10.0.0.6",
                443,
                "10.0.0.6".parse().expect("ip"),
            ),
        );
        // Optional, both grants: nothing is cut.
        sessions.offboard(
            with("optional", "\"10.0.0.0/24:22\", \"10.0.0.6:443\"")
                .jump
                .as_ref(),
            &[],
            &Revocations::default(),
        );
        assert!(!key_only.is_cancelled() && !ssh.1.is_cancelled() && !web.1.is_cancelled());
        // Required, and :443 no longer granted.
        sessions.offboard(
            with("required", "\"10.0.0.0/24:22\"").jump.as_ref(),
            &[],
            &Revocations::default(),
        );
        assert!(key_only.is_cancelled(), "key-only tunnel session cut");
        assert!(!with_code.is_cancelled(), "the one with a code stays");
        assert!(!ssh.1.is_cancelled(), "still granted");
        assert!(web.1.is_cancelled(), "no grant covers it");
        sessions.tunnel_closed(web.0);
        assert_eq!(
            sessions.users_with_codes().into_iter().collect::<Vec<_>>(),
            ["sean"]
        );
        sessions.enrollment_gone("sean");
        assert!(with_code.is_cancelled());
    }
}
