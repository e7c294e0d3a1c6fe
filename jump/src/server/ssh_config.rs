//! russh's settings: built once per version of the limits and shared by
//! every connection (never per connection), rebuilt when a reload changes
//! them — as housekeeping rebuilds the gate.
//!
//! Owns the algorithm lists and protocol knobs; must not hold per-connection
//! state.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
    time::Duration,
};

use gatehouse_config::{JumpConfig, Limits};
use russh::{
    MethodKind, MethodSet, Preferred, SshId, cipher, kex,
    keys::{Algorithm, Certificate, EcdsaCurve, HashAlg, PrivateKey},
    mac,
    server::{WindowBudget, WindowPool},
};

/// The identification string (RFC 4253 §4.2): no library name or version
/// for scanners to match against advisories.
const SERVER_ID: &str = "SSH-2.0-gatehouse";

/// Each channel's receive window (RFC 4254 §5.2), and so the most data one
/// channel buffers. The vendored russh re-opens a channel's window only as
/// the channel's reader takes data out — a tunnel's pump, as its target
/// drains — never on receipt, and ends a session whose peer sends beyond it
/// (vendor/russh/PATCHES.md). So a channel nobody reads (a session channel
/// waiting for its `exec`; a tunnel whose target stopped reading) holds at
/// most this much unread data, a connection at most `max_channels` × this
/// (64 MiB at the default 32 channels), plus per channel: one packet (≤
/// `maximum_packet_size`) taken out but not yet written to the target, the
/// queue's per-message overhead (small packets are merged: ~2 messages per
/// 2 KiB), and ≤ `channel_buffer_size` unread requests holding ≤ 64 KiB.
///
/// 2 MiB is OpenSSH's own (`CHAN_TCP_WINDOW_DEFAULT`, channels.h): a window
/// caps one channel's upload at window / round trip (40 MiB/s at 50 ms), no
/// lower than through sshd. On loopback `benches/run tunnel` told 1 MiB,
/// 2 MiB, 16 MiB and the unpatched russh with 16 MiB apart by no more than
/// its run-to-run noise (±5–10% on 2 shared cores; 2026-12: chacha20 ~650–
/// 750 MiB/s up, ~570–610 down; aes128-gcm ~1.2 GiB/s up, ~850 MiB/s down).
pub const CHANNEL_WINDOW: u32 = 2 * 1024 * 1024;

/// The receive window one connection may grant above its channels' floors,
/// across all its channels: a connection holds at most this much of its
/// client's data (plus [`CHANNEL_FLOOR`] a channel) whatever it opens. Its
/// channels share it: one tunnel gets a whole [`CHANNEL_WINDOW`], 32 get
/// 256 KiB each. The vendored russh grants a channel window only while its
/// reader reads (patch 0007), so a session channel nobody reads (waiting
/// for its `exec`, or refused) gets none at all.
pub const CONNECTION_WINDOWS: usize = 8 * 1024 * 1024;

/// What each channel may hold whatever the budgets say, so that a busy
/// connection, user or process slows a channel down but never stops it:
/// one OpenSSH packet (`CHAN_TCP_PACKET_DEFAULT`, 32 KiB).
pub const CHANNEL_FLOOR: u32 = 32 * 1024;

/// The window all of one user's connections may grant above their floors
/// (`max_connections_per_user` connections share it).
pub const USER_WINDOWS: usize = 32 * 1024 * 1024;

/// The window the whole process may grant above the channels' floors.
pub const PROCESS_WINDOWS: usize = 256 * 1024 * 1024;

/// Unread requests a channel may hold for its reader. Requests the handler
/// refuses (`env`, X11, agent, a pty outside enrollment) are answered and
/// never held, and EOF and close always go in (vendored russh, patch 0006),
/// so a real client's `SendEnv LANG LC_*` (up to 13 `env`) or a hostile
/// one's 10,000 hold nothing; a request beyond these 32 is refused on its
/// channel, never by ending the connection (issue 23, item 5).
const UNREAD_REQUESTS: usize = 32;

/// The key re-exchanges a client may start once connected: 10 at once, then
/// one every 2 s; a client starting more is disconnected (the vendored
/// russh's patch 0003). Every re-key costs the server a key exchange and a
/// host key signature (~1–2 ms of a core), so unlimited re-keys let one
/// client keep a core busy. A real client re-keys after an amount of data
/// (OpenSSH: 1 GiB with chacha20-poly1305, more with AES-GCM) or an hour at
/// most: this allows a sustained 512 MiB/s each way with chacha20.
pub const CLIENT_REKEYS: russh::server::RekeyLimit = russh::server::RekeyLimit {
    burst: 10,
    per: Duration::from_secs(2),
};

/// `n` as a count of things (saturating; a u32 always fits on 64-bit).
pub(crate) fn count(n: std::num::NonZeroU32) -> usize {
    usize::try_from(n.get()).unwrap_or(usize::MAX)
}

/// The settings in force and the limits they were built from.
pub(crate) struct SshSettings {
    host_key: PrivateKey,
    /// The host key's certificate (`jump.host_certificate`), if any.
    host_cert: Option<Certificate>,
    /// [`PROCESS_WINDOWS`], drawn from by every connection.
    windows: Arc<WindowPool>,
    current: Mutex<(Limits, Arc<russh::server::Config>)>,
}

impl SshSettings {
    /// Settings for `jump`'s limits, serving `host_key`.
    pub(crate) fn new(
        jump: &JumpConfig,
        host_key: PrivateKey,
        host_cert: Option<Certificate>,
    ) -> SshSettings {
        let windows = WindowPool::new(PROCESS_WINDOWS);
        let built = build(&jump.limits, &host_key, host_cert.as_ref(), &windows);
        SshSettings {
            host_key,
            host_cert,
            windows,
            current: Mutex::new((jump.limits.clone(), built)),
        }
    }

    /// The settings for a new connection.
    pub(crate) fn current(&self) -> Arc<russh::server::Config> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()).1)
    }

    /// Rebuild if `jump`'s limits changed; true if it did.
    pub(crate) fn update(&self, jump: &JumpConfig) -> bool {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 == jump.limits {
            return false;
        }
        *current = (
            jump.limits.clone(),
            build(
                &jump.limits,
                &self.host_key,
                self.host_cert.as_ref(),
                &self.windows,
            ),
        );
        true
    }
}

fn build(
    limits: &Limits,
    host_key: &PrivateKey,
    host_cert: Option<&Certificate>,
    windows: &Arc<WindowPool>,
) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        server_id: SshId::Standard(SERVER_ID.into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Rejections are padded by the handler (`login::padded`), not by
        // russh, which would delay partial success too. `none` is not
        // padded: its answer is the same for every user.
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key.clone()],
        // Served beside the key: `@cert-authority` in known_hosts trusts it.
        certificates: host_cert.into_iter().cloned().collect(),
        max_auth_attempts: count(limits.max_auth_attempts),
        // Idle time is judged on channel traffic by our own watchdog
        // (`idle_timeout`); keepalives notice dead clients: 3 unanswered
        // at 30 s intervals end the connection.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        // Flow control: see CHANNEL_WINDOW. Packets larger than russh's
        // default 32 KiB help bulk tunnels.
        window_size: CHANNEL_WINDOW,
        maximum_packet_size: 256 * 1024,
        channel_buffer_size: UNREAD_REQUESTS,
        window_budget: Some(WindowBudget {
            per_session: CONNECTION_WINDOWS,
            floor: CHANNEL_FLOOR,
            pools: vec![Arc::clone(windows)],
        }),
        client_rekey_limit: Some(CLIENT_REKEYS),
        preferred: Preferred {
            kex: Cow::Borrowed(&[
                kex::MLKEM768X25519_SHA256,
                kex::SNTRUP761X25519_SHA512,
                kex::SNTRUP761X25519_SHA512_OPENSSH,
                kex::CURVE25519,
                kex::CURVE25519_PRE_RFC_8731,
                kex::EXTENSION_SUPPORT_AS_SERVER,
                kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
            ]),
            cipher: Cow::Borrowed(&[
                cipher::CHACHA20_POLY1305,
                cipher::AES_256_GCM,
                cipher::AES_128_GCM,
            ]),
            // Encrypt-then-MAC only (used with no AEAD cipher anyway).
            mac: Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            // Host key: ed25519 only (the only key we have). The same list is
            // sent as `server-sig-algs` for user keys: no SHA-1 `ssh-rsa`.
            key: Cow::Borrowed(&[
                Algorithm::Ed25519,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP384,
                },
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP521,
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]),
            ..Preferred::default()
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn a_reload_that_changes_the_limits_rebuilds_the_settings() {
        let config = gatehouse_config::parse(
            std::path::Path::new("/etc/gatehouse/g.yaml"),
            "jump:\n  listen: [\"127.0.0.1:0\"]\n  limits: { max_auth_attempts: 2 }\n",
        )
        .expect("config");
        let mut jump = config.jump.clone().expect("jump");
        let key =
            PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).expect("key");
        let settings = SshSettings::new(&jump, key, None);
        let first = settings.current();
        assert_eq!(first.max_auth_attempts, 2);
        assert!(!settings.update(&jump), "same limits: nothing to rebuild");
        assert!(Arc::ptr_eq(&first, &settings.current()));
        jump.limits.max_auth_attempts = NonZeroU32::new(9).expect("nonzero");
        assert!(settings.update(&jump));
        assert_eq!(settings.current().max_auth_attempts, 9);
    }
}
