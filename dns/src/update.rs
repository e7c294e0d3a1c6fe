//! RFC 2136 dynamic updates signed with TSIG (RFC 8945): a VM registers its
//! own name (`nsupdate` on `vagrant up`) without a config change.
//!
//! Only keys in `dns.update_keys` may update, each in its own zones; names
//! the config has (and everything below them) are never changed; a dynamic
//! name follows the same wildcard rule as a configured one and brings its
//! PTR in a configured reverse zone along. The names live in
//! `state_dir/dns-names.json`, one host's own (a fleet shares names through
//! the YAML).
//!
//! Layout:
//! - `names`: [`Names`], the dynamic names, their file form, and how they
//!   join the config's records (no I/O);
//! - `decide`: what one authenticated UPDATE does (prerequisites, prescan,
//!   bounds), applied to a copy (no I/O);
//! - `tsig`: which key signed a request, and the TSIG of each response;
//! - `replay`: the memory of MACs taken, so a signed update works once;
//! - `store`: [`NamesFile`], the file under a lock shared with the CLI;
//! - `audit`: [`DnsAudit`], the `dns_update` audit line;
//! - `service`: the running server's glue (rates, permits, the pipeline,
//!   reloads, noticing the CLI's changes).

mod audit;
mod decide;
mod names;
mod replay;
mod service;
mod store;
mod tsig;

pub use audit::{DnsAudit, UpdateResult};
pub use names::{DynamicName, MAX_ADDRS_PER_NAME, Names, Served};
pub use service::{ALL_PER_SECOND, MAX_IN_FLIGHT, MAX_UPDATE_LEN, PER_NETWORK_PER_SECOND};
pub(crate) use service::{POLL, Updates};
pub use store::NamesFile;

/// Is `message` an UPDATE request (opcode 5, QR clear)? Looks at the
/// header only.
pub(crate) fn is_update(message: &[u8]) -> bool {
    message
        .get(2)
        .is_some_and(|flags| flags & 0x80 == 0 && (flags >> 3) & 0x0f == 5)
}

/// A bare REFUSED for the update `request` (over a rate: not audited, so a
/// flood writes no log lines).
pub(crate) fn refusal(request: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
    tsig::response(
        id,
        hickory_proto::op::ResponseCode::Refused,
        tsig::Signing::None,
        0,
    )
}

/// The update pipeline without the disk, the rates or the replay memory,
/// for the fuzzer (`fuzz/fuzz_targets/dns_update.rs`): parse, check the
/// TSIG against `dns.update_keys`, decide against `names`, and build the
/// response the server would send (`None`: not a message it would answer).
/// The names an applied update leads to come back too.
pub fn judge_update(
    request: &[u8],
    dns: &gatehouse_config::DnsConfig,
    names: &Names,
    now: u64,
) -> Option<(Vec<u8>, Option<Names>)> {
    use hickory_proto::op::{Message, ResponseCode};
    use tsig::{Checked, Signing};

    let message = Message::from_vec(request).ok()?;
    let id = message.metadata.id;
    let response = |rcode, signing| tsig::response(id, rcode, signing, now);
    match tsig::check(request, &message, &dns.update_keys, now) {
        Checked::Unsigned => Some((response(ResponseCode::Refused, Signing::None)?, None)),
        Checked::UnknownKey(name) => Some((
            response(ResponseCode::NotAuth, Signing::BadKey(&name))?,
            None,
        )),
        Checked::BadSig(signer) => Some((
            response(ResponseCode::NotAuth, Signing::BadSig(&signer))?,
            None,
        )),
        Checked::BadTime(signed) => Some((
            response(
                ResponseCode::NotAuth,
                Signing::Signed {
                    request: &signed,
                    bad_time: true,
                },
            )?,
            None,
        )),
        Checked::Valid(signed) => {
            let origin = decide::Origin {
                key: signed.key,
                source: std::net::IpAddr::from([192, 0, 2, 1]),
                now,
            };
            let (rcode, next) = match decide::decide(names, dns, &message, &origin) {
                decide::Decision::Changed { names, .. } => (ResponseCode::NoError, Some(names)),
                decide::Decision::Unchanged => (ResponseCode::NoError, None),
                decide::Decision::Refused(rcode, _) => (rcode, None),
            };
            let signing = Signing::Signed {
                request: &signed,
                bad_time: false,
            };
            Some((response(rcode, signing)?, next))
        }
    }
}
