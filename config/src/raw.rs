//! The YAML exactly as written: strings and numbers, no meaning yet.
//! `deny_unknown_fields` everywhere, so a typo is an error, not a silent default.

use indexmap::IndexMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub state_dir: Option<String>,
    #[serde(default)]
    pub log: RawLog,
    pub jump: Option<RawJump>,
    pub dns: Option<RawDns>,
    pub admin: Option<RawAdmin>,
    pub state: Option<RawState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub redis: Option<RawRedis>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub url: Option<String>,
    pub sentinel: Option<RawSentinel>,
    pub password_file: Option<String>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub seal_key_file: Option<String>,
    #[serde(default)]
    pub previous_seal_key_files: Vec<String>,
    pub on_outage: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSentinel {
    pub master: String,
    pub addresses: Vec<String>,
    #[serde(default)]
    pub tls: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJump {
    pub listen: Vec<String>,
    pub banner: Option<String>,
    pub mfa: Option<String>,
    pub mfa_grace: Option<String>,
    #[serde(default)]
    pub totp: RawTotp,
    pub connect_timeout: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub users: IndexMap<String, RawUser>,
    #[serde(default)]
    pub groups: IndexMap<String, RawGroup>,
    pub proxy_protocol: Option<RawProxyProtocol>,
    pub user_ca: Option<RawUserCa>,
    pub host_certificate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUserCa {
    #[serde(default)]
    pub keys: Vec<String>,
    pub keys_file: Option<String>,
    pub revoked_keys_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxyProtocol {
    pub from: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTotp {
    pub issuer: Option<String>,
    pub digits: Option<u32>,
    pub period: Option<String>,
    pub skew: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub login_grace: Option<String>,
    pub max_auth_attempts: Option<u32>,
    pub max_unauthenticated: Option<u32>,
    pub per_ip_connections: Option<String>,
    pub ban: Option<RawBan>,
    pub trusted: Option<Vec<String>>,
    pub idle_timeout: Option<String>,
    pub max_channels: Option<u32>,
    pub max_connections_per_user: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBan {
    pub after: Option<u32>,
    pub within: Option<String>,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    pub max: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    #[serde(default)]
    pub keys: Vec<String>,
    pub keys_file: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub totp_secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    #[serde(default)]
    pub allow: Vec<String>,
    pub mfa_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub listen: Vec<String>,
    pub ttl: Option<String>,
    #[serde(default)]
    pub zones: IndexMap<String, RawZone>,
    #[serde(default)]
    pub upstream: Vec<String>,
    pub rate_limit: Option<RawDnsRateLimit>,
    #[serde(default)]
    pub reverse: Vec<String>,
    /// RFC 2136 updates: key name -> what it may do.
    #[serde(default)]
    pub update_keys: IndexMap<String, RawUpdateKey>,
}

/// One TSIG key allowed to send RFC 2136 updates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpdateKey {
    pub algorithm: String,
    pub secret_file: String,
    pub zones: Vec<String>,
    pub max_names: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnsRateLimit {
    /// "200/s", or "off".
    pub per_network: Option<String>,
    pub slip: Option<u32>,
    pub trusted: Option<Vec<String>>,
    /// 0: no cap.
    pub max_amplification: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZone {
    #[serde(default)]
    pub records: IndexMap<String, RawRecord>,
}

/// A record's value: addresses in the one-line form, or a map of types.
/// Deserialized by hand rather than `untagged`, so a typo in the map gets
/// serde's "unknown field `cnmae`, expected one of …" with its place.
#[derive(Debug)]
pub(crate) enum RawRecord {
    Addrs(OneOrMany),
    Typed(RawTypedRecord),
}

impl<'de> Deserialize<'de> for RawRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawRecord;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "an address, a list of addresses, or a map of addrs, cname, txt, mx, srv",
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawRecord, E> {
                Ok(RawRecord::Addrs(OneOrMany::One(text.to_owned())))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<RawRecord, A::Error> {
                let list =
                    Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(RawRecord::Addrs(OneOrMany::Many(list)))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawRecord, A::Error> {
                RawTypedRecord::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRecord::Typed)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `{ addrs: …, cname: …, txt: …, mx: …, srv: … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTypedRecord {
    pub addrs: Option<OneOrMany>,
    pub cname: Option<String>,
    pub txt: Option<OneOrMany>,
    pub mx: Option<OneOrMany>,
    pub srv: Option<OneOrMany>,
}

/// `name: 192.0.2.1` or `name: [192.0.2.1, "2001:db8::1"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<(Option<usize>, &str)> {
        match self {
            OneOrMany::One(s) => vec![(None, s.as_str())],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (Some(i), s.as_str()))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: String,
}
