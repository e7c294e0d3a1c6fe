//! End-to-end tests: the real `gatehouse` binary on loopback ports the tests
//! choose, driven by real clients (`dig`). `tests/run` installs the tools.

mod util;

// The admin endpoint: /healthz and /metrics with curl.
mod admin;

// `gatehouse check`: exit codes, summaries and located errors.
mod check;
// Defences: bans before any SSH byte, rate and pre-auth limits, login grace, idle cut, max_channels, offboarding, ssh-audit.
mod defence;
// DNS answers for every kind of query, over UDP and TCP, with dig.
mod dns;
// MFA lifecycle: self-enrollment over ssh -tt, recovery codes, totp reset, code limits.
mod enroll;
// SSH jump host: key + TOTP, grants, -W/-J/nc tunnels, refusals, audit events.
mod jump;
// Attacks with real clients (OpenSSH, asyncssh, raw sockets), each asserting the bound it meets: slot holding, prompt closes, SHA-1 signatures, huge names, garbage, re-key storms, per-user caps, reloads, refused destinations.
mod hostile;
// ssh-config and resolver generators, the vagrant/ files.
mod laptop;
// Start, stop, and the no-config dev setup.
mod lifecycle;
// Live reload by file change and SIGHUP; invalid reloads keep the old config.
mod reload;
