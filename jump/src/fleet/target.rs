//! Where the fleet's Redis primary is: one server (`url`), or whichever
//! primary the Sentinels name (`sentinel`). The `redis` crate's Sentinel
//! client does not follow a master switch by itself (redis-rs issue 1438):
//! `Fleet` asks [`Target::primary`] again after every error.
//!
//! Owns building the clients (password, TLS: to one server, or to the
//! Sentinels and the servers they name) and asking the Sentinels; must
//! not keep connections (`Fleet` does) nor decide anything about logins.

use gatehouse_config::{Limit, RedisState, RedisTarget};
use redis::{
    ConnectionAddr, IntoConnectionInfo, TlsCertificates, TlsMode,
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};

use crate::error::JumpError;

/// How to reach the primary.
pub(super) enum Target {
    /// One server.
    Direct(redis::Client),
    /// The Sentinels' current primary, asked each time (one asker at a time).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// What TLS to Redis verifies against: `ca_file` (read now, blocking: at
/// start), or the system's roots.
fn certificates(state: &RedisState) -> Result<TlsCertificates, JumpError> {
    // rustls needs one crypto provider for the process: aws-lc-rs, which
    // russh already uses. Installing twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root_cert = match &state.ca_file {
        Some(file) => Some(
            gatehouse_config::read_bounded(file, &Limit::CA_FILE)
                .map_err(|e| JumpError::Fleet(format!("ca_file {}: {e}", file.display())))?,
        ),
        None => None,
    };
    Ok(TlsCertificates {
        client_tls: None,
        root_cert,
    })
}

impl Target {
    /// The target of `state`, its password read from its file (blocking: at
    /// start).
    pub(super) fn new(state: &RedisState) -> Result<Target, JumpError> {
        let bad = |why: String| JumpError::Fleet(why);
        let password = match &state.password_file {
            Some(file) => Some(
                gatehouse_config::read_bounded_text(file, &Limit::PASSWORD_FILE)
                    .map_err(|e| bad(format!("password_file {}: {e}", file.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => None,
        };
        let url = match &state.target {
            RedisTarget::Url(url) => url,
            RedisTarget::Sentinel {
                master,
                addresses,
                tls,
            } => {
                let sentinels = addresses.iter().map(|(host, port)| {
                    if *tls {
                        ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
                        .map_err(|e| bad(format!("sentinel: {e}")))?;
                if let Some(password) = &password {
                    builder = builder.set_client_to_redis_password(password);
                }
                if *tls {
                    // The Sentinels and the servers they name: verified
                    // against the same CA (or the system's roots).
                    let certs = certificates(state)?;
                    builder = builder
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_certificates(certs.clone())
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_certificates(certs);
                }
                let client = builder.build().map_err(|e| bad(format!("sentinel: {e}")))?;
                return Ok(Target::Sentinel(tokio::sync::Mutex::new(client)));
            }
        };
        let mut info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| bad(format!("url: {e}")))?;
        if let Some(password) = &password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = if url.starts_with("rediss://") {
            let certs = certificates(state)?;
            redis::Client::build_with_tls(info, certs).map_err(|e| bad(e.to_string()))?
        } else {
            redis::Client::open(info).map_err(|e| bad(e.to_string()))?
        };
        Ok(Target::Direct(client))
    }

    /// Behind Sentinels: the primary can move, so it is asked again after
    /// errors, and claims wait for a replica.
    pub(super) fn fails_over(&self) -> bool {
        matches!(self, Target::Sentinel(_))
    }

    /// A client for the primary now: with Sentinels, the one they name
    /// (and which says it is the primary: `ROLE`), asked now.
    pub(super) async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::Direct(client) => Ok(client.clone()),
            Target::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }
}
