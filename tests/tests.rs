//! End-to-end tests: the real `gatehouse` binary on loopback ports the tests
//! choose, driven by real clients (`dig`). `tests/run` installs the tools.

mod util;

// The admin endpoint: /healthz and /metrics with curl.
mod admin;

// OpenSSH certificates: user certificates from a CA (every refusal with its reason), KRLs, a host certificate via @cert-authority.
mod certs;
// The Salt formula and the Ansible role applied by salt-call and ansible-playbook: checked writes, idempotence, refusals, offboarding, new names.
mod cm;
// `gatehouse check`: exit codes, summaries and located errors.
mod check;
// Which credential a session stands on: a certificate then another user's key on one connection, plain keys in the KRL (at probe, at signature, live).
mod credentials;
// Every client people use through the jump host to a real sshd: paramiko, asyncssh, Go's x/crypto/ssh, Node's ssh2, libssh2, libssh, PuTTY, dropbear, scp/sftp/rsync/git, two jumps, agent forwarding, Ansible.
mod clients;
// Defences: bans before any SSH byte, rate and pre-auth limits, login grace, idle cut, max_channels, offboarding, ssh-audit.
mod defence;
// FIDO security keys with OpenSSH and its software token (sk-dummy): touch, no-touch-required, verify-required as a whole login, certificates, counters.
mod fido;
// DNS answers for every kind of query, over UDP and TCP, with dig.
mod dns;
// RFC 2136 updates signed with TSIG, with nsupdate and dig: add/replace/delete, prerequisites, every bad update refused and audited, restarts, `gatehouse dns list/remove`, a flood of signed updates.
mod dns_update;
// Attacks on the DNS side: TCP slowloris from one network and many, UDP floods and the response rate limit.
mod dns_attacks;
// MFA lifecycle: self-enrollment over ssh -tt, recovery codes, totp reset, code limits.
mod enroll;
// A fleet on one real redis-server: codes work once across hosts, the per-user limit counts on every host, Redis outages.
mod fleet;
// Someone with write access to the fleet's Redis and no seal key (issue 24): each attack refused, audited and counted; outages as "unknown"; bans lifted fleet-wide.
mod fleet_trust;
// Redis Sentinel with the real engines (issue 24 part 3): the primary killed while logins run, logins resume after the promotion, a used code stays used; a step Redis lost stays used on the host that saw it; docs/fleet.md's ACL is all a fleet needs.
mod fleet_failover;
// Three hosts on one Redis behind a real HAProxy (PROXY v2): codes once, bans everywhere, the client's address.
mod fleet_balanced;
// MFA grace (issue 28): the seed's ProxyCommand without ControlMaster asks one code per key and source; --end, reset, key removal, expiry; paramiko, asyncssh; two hosts on one Redis, a forged grace refused.
mod grace;
// SSH jump host: key + TOTP, grants, -W/-J/nc tunnels, refusals, audit events.
mod jump;
// Attacks with real clients (OpenSSH, asyncssh, raw sockets), each asserting the bound it meets: slot holding, prompt closes, SHA-1 signatures, huge names, garbage, re-key storms, per-user caps, reloads, refused destinations.
mod hostile;
// Behind HAProxy: PROXY protocol v1/v2 headers, the client's address audited and banned, bad headers refused.
mod proxy_protocol;
// Real resolvers (unbound, kresd, dnsmasq) validating DNSSEC and forwarding only the TLD: every kind of answer, TCP for the big one, 0x20, SERVFAIL without the insecure mark.
mod resolvers;
// ssh-config and resolver generators, the vagrant/ files.
mod laptop;
// Start, stop, and the no-config dev setup.
mod lifecycle;
// Live reload by file change and SIGHUP; invalid reloads keep the old config.
mod reload;
