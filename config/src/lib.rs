//! gatehouse's configuration.
//!
//! One YAML file drives the whole appliance. It is read in two stages:
//! a raw serde model that only knows the shape (`deny_unknown_fields`), then
//! validation into typed values that cannot hold bad data: parsed CIDRs,
//! grants, durations, DNS names and OpenSSH keys. Every error names file,
//! line and column. A running server holds its configuration in one
//! `tokio::sync::watch` channel fed by [`Reloader`].
//!
//! Layout:
//! - `raw`: the serde model, shape only;
//! - `validate`: raw to [`Config`], collecting every [`Problem`];
//! - `locate`: where each value stands in the text, for error messages;
//! - `values`, `grant`: the small typed values;
//! - `key_line`: one public key line and its options (`verify-required`...);
//! - `file`: the bounded reader of every file gatehouse is pointed at;
//! - `load`: read + parse + validate;
//! - `secret`: provisioned TOTP secret files, the one reader everyone uses;
//! - `tsig`: TSIG key files for `dns.update_keys`;
//! - `reload`: SIGHUP / file-change reloads published on a watch channel.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod file;
mod grant;
mod key_line;
mod load;
mod locate;
mod model;
mod raw;
mod reload;
mod reverse;
mod secret;
mod tsig;
mod validate;
mod values;

pub use error::{ConfigError, Problem};
pub use file::{
    FileError, Follow, Limit, create_atomic, open_regular, read_bounded, read_bounded_text,
    read_opened, text, write_atomic,
};
pub use grant::{Grant, NamePattern, PortSet, Target};
pub use key_line::{KeyOptions, UserKey, is_security_key};
pub use load::{load, parse};
pub use locate::Location;
pub use model::{
    AdminConfig, BanPolicy, Config, DnsConfig, DnsRateLimit, Group, JumpConfig, Limits, LogConfig,
    LogFormat, LogLevel, MAX_MFA_GRACE, Mfa, OnOutage, PublicKey, Record, RedisState, RedisTarget,
    ReverseZone, StateConfig, TotpSettings, TsigAlgorithm, TsigSecret, UpdateKey, User, UserCa,
    Zone,
};
pub use reload::{ReloadStatus, Reloader, restart_needed};
pub use reverse::{pointer_name, reverse_zone};
pub use secret::{MIN_SECRET_BYTES, SecretError, parse_totp_secret, read_totp_secret_file};
pub use tsig::{MIN_TSIG_SECRET_BYTES, TsigFileError, parse_tsig_key, read_tsig_key_file};
pub use validate::DEFAULT_STATE_DIR;
pub use values::{DomainName, Rate, UserName, parse_cidr, parse_duration};
