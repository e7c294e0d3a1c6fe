//! MFA grace (issue 28): after a key + TOTP code login, the same user with
//! the same key (for a certificate, the certified key) from the same
//! source (IPv4 /32, IPv6 /64, the PROXY header's client when proxied)
//! needs no code until the grace ends. It starts at the code and is never
//! extended by use. Bound to key and source so that a grace is no bearer
//! token: another key, or the same key from elsewhere, types a code.
//!
//! Owns the decisions (plain functions, `now` passed in: which grace lets a
//! login in, how one starts, which survive a config change, what the user
//! is told) and where graces are kept: `state_dir/totp-grace.json` with
//! local state, the fleet's Redis (signed, `fleet::graces`) with
//! `state.redis`. Must not decide whether a code was right (`verify`) nor
//! talk SSH.

use std::{net::IpAddr, time::Duration};

use gatehouse_config::{JumpConfig, MAX_MFA_GRACE};
use russh::keys::HashAlg;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{TotpStore, user_map::UserMap};
use crate::{error::JumpError, krl::Revocations};

/// The most graces one user holds (one per key and source): a new one
/// beyond it evicts the oldest. A user with 64 keys-and-places at once
/// is not the common case; a table that only grows is worse.
pub(crate) const MAX_PER_USER: usize = 64;

/// One grace: which key, from where, since and until when, and which code
/// login began it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grace {
    /// SHA-256 fingerprint of the key (of a certificate: its certified key).
    pub fingerprint: String,
    /// The source network: an IPv4 address, or an IPv6 /64's first address.
    pub source: IpAddr,
    /// Unix time of the code that began it.
    pub began: u64,
    /// Unix time it ends.
    pub until: u64,
    /// The TOTP step of that code: with the user, it names the code login
    /// (a step is used once, fleet-wide).
    pub step: u64,
    /// That login's connection number (on the host that took the code).
    pub conn: u64,
    /// The key came in a certificate.
    pub certificate: bool,
}

impl Grace {
    /// The source as shown: `203.0.113.7` or `2001:db8:1:2::/64`.
    pub fn source_shown(&self) -> String {
        shown(self.source)
    }

    /// Where it sits among a user's graces: one per key and source.
    pub(crate) fn slot(&self) -> String {
        format!("{} {}", self.fingerprint, self.source)
    }
}

fn shown(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The source network a grace is bound to, from the canonical client
/// address: the same key a ban uses (IPv4 /32, IPv6 /64).
pub(crate) fn source_of(peer: IpAddr) -> IpAddr {
    crate::bans::source_key(peer)
}

/// The grace that lets `fingerprint` from `source` in at `now`, if any,
/// under the user's grace now (`allowed`: a grace begun under a longer
/// setting ends when the current one says; zero ends them all).
pub(crate) fn find<'a>(
    graces: &'a [Grace],
    fingerprint: &str,
    source: IpAddr,
    allowed: Duration,
    now: u64,
) -> Option<&'a Grace> {
    if allowed.is_zero() {
        return None;
    }
    let allowed = allowed.min(MAX_MFA_GRACE).as_secs();
    graces.iter().find(|g| {
        g.fingerprint == fingerprint
            && g.source == source
            && now >= g.began
            && now < g.until
            && now < g.began.saturating_add(allowed)
    })
}

/// The graces after `new` begins at `now`: the ended ones and the one it
/// replaces (same key and source) dropped, and the oldest beyond
/// [`MAX_PER_USER`] evicted. Returns what left, so a store can remove it.
pub(crate) fn begin(graces: &mut Vec<Grace>, new: Grace, now: u64) -> Vec<Grace> {
    let slot = new.slot();
    let (kept, mut gone): (Vec<Grace>, Vec<Grace>) = std::mem::take(graces)
        .into_iter()
        .partition(|g| g.until > now && g.slot() != slot);
    *graces = kept;
    graces.sort_by_key(|g| g.began);
    while graces.len() >= MAX_PER_USER {
        gone.push(graces.remove(0));
    }
    graces.push(new);
    gone
}

/// Does `grace` of `user` survive the config `jump` and the revocation
/// list: the user still there, and its key still theirs and not revoked
/// (a certificate's: a CA still trusted; the certificate itself is
/// checked, revocation included, at every login before any grace)?
pub(crate) fn kept(
    jump: Option<&JumpConfig>,
    user: &str,
    grace: &Grace,
    revoked: &Revocations,
) -> bool {
    let Some(jump) = jump else {
        return false;
    };
    let Some(account) = jump.user(user) else {
        return false;
    };
    if grace.certificate {
        return jump.user_ca.as_ref().is_some_and(|ca| !ca.keys.is_empty());
    }
    account.keys.iter().any(|k| {
        k.key.fingerprint(HashAlg::Sha256).to_string() == grace.fingerprint
            && !revoked.key(k.key.key_data())
    })
}

/// What the user is told after the code:
/// `No code needed from 203.0.113.7 with this key until 14:32 UTC.`
/// (the minute it ends, rounded down).
pub(crate) fn notice(source: IpAddr, until: u64) -> String {
    let day = until % 86_400;
    format!(
        "No code needed from {} with this key until {:02}:{:02} UTC.",
        shown(source),
        day / 3600,
        day % 3600 / 60
    )
}

/// `state_dir/totp-grace.json`: user -> graces (local state).
#[derive(Debug)]
pub(super) struct GraceFile(UserMap<Vec<Grace>>);

impl GraceFile {
    pub(super) fn new(state_dir: &std::path::Path) -> GraceFile {
        GraceFile(UserMap::new(state_dir.join("totp-grace.json")))
    }
}

impl TotpStore {
    /// `user`'s graces as stored (ended ones too). With the fleet's Redis,
    /// its signed ones (a forged one is refused and audited); an outage
    /// is an error: no grace then, the code is asked.
    pub async fn graces(&self, user: &str) -> Result<Vec<Grace>, JumpError> {
        match self.fleet.as_deref() {
            Some(fleet) => fleet
                .load_graces(user)
                .await
                .map_err(|_| JumpError::StoreUnavailable),
            None => Ok(self.graces.0.get(user).await?.unwrap_or_default()),
        }
    }

    /// Begin `grace` for `user` at `now`; whether it was stored.
    pub(crate) async fn begin_grace(&self, user: &str, grace: Grace, now: u64) -> bool {
        let stored = match self.fleet.as_deref() {
            Some(fleet) => match fleet.load_graces(user).await {
                Ok(mut graces) => {
                    let gone = begin(&mut graces, grace.clone(), now);
                    fleet.begin_grace(user, &grace, &gone).await.is_ok()
                }
                Err(_) => false,
            },
            None => {
                let change = move |entry: &mut Option<Vec<Grace>>| {
                    let mut graces = entry.take().unwrap_or_default();
                    begin(&mut graces, grace, now);
                    *entry = Some(graces);
                };
                match self.graces.0.update(user, change).await {
                    Ok(()) => true,
                    Err(error) => {
                        warn!(%error, user, "cannot store the MFA grace");
                        false
                    }
                }
            }
        };
        if !stored {
            warn!(
                user,
                "the MFA grace was not stored: the next login asks a code"
            );
        }
        stored
    }

    /// End every grace of `user` (`gatehouse totp grace USER --end`,
    /// `totp reset`): how many there were.
    pub async fn end_graces(&self, user: &str) -> Result<usize, JumpError> {
        match self.fleet.as_deref() {
            Some(fleet) => fleet
                .end_graces(user)
                .await
                .map_err(|_| JumpError::StoreUnavailable),
            None => {
                let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let counted = std::sync::Arc::clone(&count);
                self.graces
                    .0
                    .update(user, move |entry| {
                        let n = entry.take().map_or(0, |g| g.len());
                        counted.store(n, std::sync::atomic::Ordering::Relaxed);
                    })
                    .await?;
                Ok(count.load(std::sync::atomic::Ordering::Relaxed))
            }
        }
    }

    /// End `user`'s graces that `jump` and `revoked` no longer allow (the
    /// user or the key removed or revoked, the certificate authority
    /// gone): after a reload or a new revocation list.
    pub(crate) async fn prune_graces(
        &self,
        jump: Option<&JumpConfig>,
        user: &str,
        revoked: &Revocations,
    ) {
        let Ok(graces) = self.graces(user).await else {
            return;
        };
        let gone: Vec<Grace> = graces
            .into_iter()
            .filter(|g| !kept(jump, user, g, revoked))
            .collect();
        if gone.is_empty() {
            return;
        }
        let result = match self.fleet.as_deref() {
            Some(fleet) => fleet
                .end_some_graces(user, &gone)
                .await
                .map_err(|_| JumpError::StoreUnavailable),
            None => {
                let slots: Vec<String> = gone.iter().map(Grace::slot).collect();
                self.graces
                    .0
                    .update(user, move |entry| {
                        if let Some(graces) = entry {
                            graces.retain(|g| !slots.contains(&g.slot()));
                            if graces.is_empty() {
                                *entry = None;
                            }
                        }
                    })
                    .await
            }
        };
        if let Err(error) = result {
            warn!(%error, user, "cannot end the MFA graces of a removed key or user");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "SHA256:abc";

    fn grace(fp: &str, source: &str, began: u64, until: u64) -> Grace {
        Grace {
            fingerprint: fp.into(),
            source: source.parse().expect("ip"),
            began,
            until,
            step: began / 30,
            conn: 1,
            certificate: false,
        }
    }

    #[test]
    fn a_grace_lets_in_only_its_key_from_its_source_until_it_ends() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let graces = [grace(FP, "203.0.113.7", 1000, 2800)];
        let allowed = Duration::from_secs(1800);
        assert!(find(&graces, FP, ip("203.0.113.7"), allowed, 1000).is_some());
        assert!(find(&graces, FP, ip("203.0.113.7"), allowed, 2799).is_some());
        assert!(
            find(&graces, FP, ip("203.0.113.7"), allowed, 2800).is_none(),
            "ended"
        );
        assert!(find(&graces, "SHA256:other", ip("203.0.113.7"), allowed, 1500).is_none());
        assert!(find(&graces, FP, ip("203.0.113.8"), allowed, 1500).is_none());
        // Lowered since (a group's mfa_grace, or off): it ends sooner.
        let lowered = Duration::from_secs(300);
        assert!(find(&graces, FP, ip("203.0.113.7"), lowered, 1299).is_some());
        assert!(find(&graces, FP, ip("203.0.113.7"), lowered, 1300).is_none());
        assert!(find(&graces, FP, ip("203.0.113.7"), Duration::ZERO, 1001).is_none());
        // A clock set back before its start is no use of it.
        assert!(find(&graces, FP, ip("203.0.113.7"), allowed, 999).is_none());
    }

    #[test]
    fn the_source_is_the_address_or_its_ipv6_64() {
        let peer = |s: &str| source_of(s.parse().expect("ip"));
        assert_eq!(peer("203.0.113.7"), peer("203.0.113.7"));
        assert_ne!(peer("203.0.113.7"), peer("203.0.113.8"));
        assert_eq!(peer("2001:db8:1:2::10"), peer("2001:db8:1:2:ffff::1"));
        assert_ne!(peer("2001:db8:1:2::10"), peer("2001:db8:1:3::10"));
        assert_eq!(peer("::ffff:203.0.113.7"), peer("203.0.113.7"), "mapped");
        let g = Grace {
            source: peer("2001:db8:1:2::10"),
            ..grace(FP, "203.0.113.7", 0, 1)
        };
        assert_eq!(g.source_shown(), "2001:db8:1:2::/64");
    }

    #[test]
    fn beginning_replaces_the_same_slot_drops_ended_ones_and_caps_the_table() {
        let mut graces = vec![
            grace(FP, "203.0.113.7", 100, 200),
            grace(FP, "203.0.113.8", 100, 5000),
        ];
        let gone = begin(&mut graces, grace(FP, "203.0.113.8", 1000, 2000), 1000);
        assert_eq!(gone.len(), 2, "the ended one and the replaced one");
        assert_eq!(graces, [grace(FP, "203.0.113.8", 1000, 2000)]);

        let mut graces = Vec::new();
        for i in 0..100_u64 {
            let fp = format!("SHA256:{i}");
            begin(
                &mut graces,
                grace(&fp, "198.51.100.1", 1000 + i, 9000),
                1000 + i,
            );
            assert!(graces.len() <= MAX_PER_USER);
        }
        assert_eq!(graces.len(), MAX_PER_USER);
        assert_eq!(graces[0].fingerprint, "SHA256:36", "the oldest went first");
        assert_eq!(graces[MAX_PER_USER - 1].fingerprint, "SHA256:99");
    }

    #[test]
    fn the_user_is_told_until_when_in_utc() {
        // 2026-12-07 14:32:59 UTC.
        let until = 1_796_653_979;
        assert_eq!(
            notice("203.0.113.7".parse().expect("ip"), until),
            "No code needed from 203.0.113.7 with this key until 14:32 UTC."
        );
    }

    #[test]
    fn a_grace_survives_a_reload_only_with_its_user_and_key() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j";
        let config = |users: &str| {
            let text = format!("jump:\n  listen: [\"127.0.0.1:0\"]\n  users:\n{users}");
            gatehouse_config::parse(std::path::Path::new("g.yaml"), &text).expect("config")
        };
        let with = config(&format!("    sean:\n      keys: [\"{key}\"]\n"));
        let fp = with.jump.as_ref().expect("jump").users[0].keys[0]
            .key
            .fingerprint(HashAlg::Sha256)
            .to_string();
        let none = Revocations::default();
        let g = grace(&fp, "203.0.113.7", 0, 10);
        assert!(kept(with.jump.as_ref(), "sean", &g, &none));
        assert!(!kept(with.jump.as_ref(), "ana", &g, &none), "another user");
        let other = config(
            "    sean:\n      keys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAGDoQ+SWrVeqjZftqLTx5r1pcETPIhT+gsK/NQSRuuU\"]\n",
        );
        assert!(!kept(other.jump.as_ref(), "sean", &g, &none), "key removed");
        assert!(!kept(None, "sean", &g, &none), "no jump section");
        let revoked = Revocations::parse(format!("{key}\n").as_bytes()).expect("list");
        assert!(
            !kept(with.jump.as_ref(), "sean", &g, &revoked),
            "key revoked"
        );
        let cert = Grace {
            certificate: true,
            ..g
        };
        assert!(
            !kept(with.jump.as_ref(), "sean", &cert, &none),
            "no user_ca"
        );
    }

    #[tokio::test]
    async fn local_graces_are_kept_across_a_restart_and_end_on_demand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TotpStore::new(dir.path());
        assert!(store.graces("sean").await.expect("read").is_empty());
        let g = grace(FP, "203.0.113.7", 1000, 2800);
        assert!(store.begin_grace("sean", g.clone(), 1000).await);
        let again = TotpStore::new(dir.path());
        assert_eq!(again.graces("sean").await.expect("read"), [g]);
        assert!(again.graces("ana").await.expect("read").is_empty());
        assert_eq!(again.end_graces("sean").await.expect("end"), 1);
        assert!(store.graces("sean").await.expect("read").is_empty());
        assert_eq!(again.end_graces("sean").await.expect("end"), 0);
    }
}
