//! TSIG (RFC 8945) for updates: which configured key signed a request and
//! whether its MAC and time hold, and the TSIG record of each kind of
//! response. The MAC arithmetic and framing are hickory-proto's (`TSigner`,
//! on aws-lc); this file picks the key, checks the time and builds the
//! answers. No I/O, no clock: `now` is passed in.

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        Name, TSigResponseContext, TSigner,
        rdata::tsig::{
            TSIG, TsigAlgorithm as Algorithm, TsigError, make_tsig_record, signed_bitmessage_to_buf,
        },
    },
    serialize::binary::{BinEncodable, BinEncoder},
};

use gatehouse_config::{TsigAlgorithm, UpdateKey};

/// The time window both ways (RFC 8945 §10 recommends 300 s); a request's
/// own fudge may narrow it, never widen it.
pub const FUDGE: u16 = 300;

/// What the request's TSIG came to.
pub enum Checked<'k> {
    /// No TSIG record.
    Unsigned,
    /// A key name or algorithm no configured key has (BADKEY).
    UnknownKey(Name),
    /// The MAC does not verify (BADSIG).
    BadSig(TSigner),
    /// The MAC holds but the time is outside the window (BADTIME, signed).
    BadTime(Signed<'k>),
    /// Good: the key, and what the response's MAC needs.
    Valid(Signed<'k>),
}

/// A request whose MAC verified.
pub struct Signed<'k> {
    /// The configured key.
    pub key: &'k UpdateKey,
    /// hickory's signer for it.
    pub signer: TSigner,
    /// The request's MAC (the response's MAC covers it; the replay memory
    /// keys on it).
    pub mac: Vec<u8>,
    /// The request's signing time.
    pub time: u64,
}

/// Checks `request` (whose parse is `message`) against `keys` at `now`.
pub fn check<'k>(
    request: &[u8],
    message: &Message,
    keys: &'k [UpdateKey],
    now: u64,
) -> Checked<'k> {
    let Some(record) = message.signature() else {
        return Checked::Unsigned;
    };
    let tsig = &record.data;
    let Some(key) = keys.iter().find(|k| {
        record
            .name
            .to_ascii()
            .trim_end_matches('.')
            .eq_ignore_ascii_case(k.name.as_str())
            && tsig.algorithm == algorithm(k.algorithm)
    }) else {
        return Checked::UnknownKey(record.name.clone());
    };
    let Ok(signer) = TSigner::new(
        key.secret.bytes().to_vec(),
        algorithm(key.algorithm),
        record.name.clone(),
        FUDGE,
    ) else {
        return Checked::UnknownKey(record.name.clone());
    };
    // The bytes the MAC covers, rebuilt by hickory; verified in constant
    // time. A MAC of the wrong length (truncated, RFC 8945 §5.2.2.1) fails.
    let verified = signed_bitmessage_to_buf(request, None, true)
        .ok()
        .is_some_and(|(tbv, _)| signer.verify(&tbv, &tsig.mac).is_ok());
    if !verified {
        return Checked::BadSig(signer);
    }
    let signed = Signed {
        key,
        signer,
        mac: tsig.mac.clone(),
        time: tsig.time,
    };
    let window = u64::from(tsig.fudge.min(FUDGE));
    if now.abs_diff(tsig.time) > window {
        return Checked::BadTime(signed);
    }
    Checked::Valid(signed)
}

fn algorithm(alg: TsigAlgorithm) -> Algorithm {
    match alg {
        TsigAlgorithm::HmacSha256 => Algorithm::HmacSha256,
        TsigAlgorithm::HmacSha384 => Algorithm::HmacSha384,
        TsigAlgorithm::HmacSha512 => Algorithm::HmacSha512,
    }
}

/// How a response is signed.
pub enum Signing<'a> {
    /// Not at all (the request was unsigned, or not TSIG at all).
    None,
    /// With the request's key, over the request's MAC; `bad_time` adds
    /// BADTIME and our clock (RFC 8945 §5.2.3).
    Signed {
        /// The verified request.
        request: &'a Signed<'a>,
        /// BADTIME.
        bad_time: bool,
    },
    /// An unsigned TSIG saying BADSIG.
    BadSig(&'a TSigner),
    /// An unsigned TSIG saying BADKEY, with the name the request used.
    BadKey(&'a Name),
}

/// A response to the update with ID `id`: the header alone (RFC 2136 §3.8
/// allows leaving the sections out) with `rcode`, and the TSIG `signing`
/// asks for. `None` only if hickory cannot sign (then send nothing).
pub fn response(id: u16, rcode: ResponseCode, signing: Signing<'_>, now: u64) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(&id.to_be_bytes());
    // QR, opcode UPDATE (5); then the low four bits of the rcode.
    out.push(0x80 | (5 << 3));
    out.push(rcode.low() & 0x0f);
    out.extend_from_slice(&[0; 8]);
    let record = match signing {
        Signing::None => return Some(out),
        Signing::Signed { request, bad_time } => {
            let mut tsig = TSIG::new(
                algorithm(request.key.algorithm),
                now,
                FUDGE,
                Vec::new(),
                id,
                bad_time.then_some(TsigError::BadTime),
                if bad_time {
                    now.to_be_bytes()[2..].to_vec()
                } else {
                    Vec::new()
                },
            );
            let tbs = request
                .signer
                .encode_response_tbs(&request.mac, &out, &tsig)
                .ok()?;
            let mac = request.signer.sign(&tbs).ok()?;
            tsig = tsig.set_mac(mac);
            make_tsig_record(request.signer.signer_name().clone(), tsig)
        }
        Signing::BadSig(signer) => *TSigResponseContext::bad_signature(id, now, signer.clone())
            .sign(&out)
            .ok()?,
        Signing::BadKey(name) => *TSigResponseContext::unknown_key(id, now, name.clone())
            .sign(&out)
            .ok()?,
    };
    let mut tail = Vec::with_capacity(128);
    record.emit(&mut BinEncoder::new(&mut tail)).ok()?;
    // ARCOUNT = 1: the TSIG record.
    out[11] = 1;
    out.extend_from_slice(&tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use gatehouse_config::{TsigSecret, UpdateKey};
    use hickory_proto::{
        op::{Message, MessageType, OpCode, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    const NOW: u64 = 1_765_000_000;

    fn key(name: &str, secret: u8) -> UpdateKey {
        UpdateKey {
            name: name.parse().expect("key"),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: TsigSecret::new(vec![secret; 32]),
            secret_file: "k".into(),
            zones: vec!["sean".parse().expect("zone")],
            max_names: NonZeroU32::MIN,
        }
    }

    /// An UPDATE signed as a client signs it (hickory's client side), and
    /// the verifier for the response.
    fn signed(key_name: &str, secret: u8, at: u64) -> (Vec<u8>, hickory_proto::rr::TSigVerifier) {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Update);
        message.add_query(Query::query(
            Name::from_ascii("sean.").expect("zone"),
            RecordType::SOA,
        ));
        let signer = TSigner::new(
            vec![secret; 32],
            Algorithm::HmacSha256,
            Name::from_ascii(key_name).expect("name"),
            300,
        )
        .expect("signer");
        let (record, verifier) = signer.sign_message(&message, at).expect("sign");
        message.set_signature(record);
        (
            message.to_vec().expect("encode"),
            verifier.expect("verifier"),
        )
    }

    fn checked<'k>(bytes: &[u8], keys: &'k [UpdateKey], now: u64) -> Checked<'k> {
        check(bytes, &Message::from_vec(bytes).expect("parse"), keys, now)
    }

    #[test]
    fn a_good_signature_verifies_and_the_signed_response_verifies_back() {
        let keys = [key("ci", 9), key("vagrant", 7)];
        let (bytes, mut verifier) = signed("vagrant.", 7, NOW);
        let Checked::Valid(request) = checked(&bytes, &keys, NOW + 299) else {
            panic!("not valid");
        };
        assert_eq!(request.key.name.as_str(), "vagrant");
        let signing = Signing::Signed {
            request: &request,
            bad_time: false,
        };
        let response = response(0x1234, ResponseCode::NoError, signing, NOW + 299).expect("signed");
        verifier
            .verify(&response)
            .expect("the client accepts our response's MAC");
    }

    #[test]
    fn wrong_secret_unknown_key_stale_time_and_no_tsig_are_told_apart() {
        let keys = [key("vagrant", 7)];
        let (bytes, _) = signed("vagrant.", 8, NOW);
        assert!(matches!(checked(&bytes, &keys, NOW), Checked::BadSig(_)));
        let (bytes, _) = signed("stranger.", 7, NOW);
        assert!(matches!(
            checked(&bytes, &keys, NOW),
            Checked::UnknownKey(_)
        ));
        let (bytes, _) = signed("vagrant.", 7, NOW);
        assert!(matches!(
            checked(&bytes, &keys, NOW + 301),
            Checked::BadTime(_)
        ));
        assert!(matches!(
            checked(&bytes, &keys, NOW - 301),
            Checked::BadTime(_)
        ));
        // A signing time of 0 (before the fudge) is only stale, never a panic.
        let (bytes, _) = signed("vagrant.", 7, 0);
        assert!(matches!(checked(&bytes, &keys, NOW), Checked::BadTime(_)));
        // One flipped bit in the signed part.
        let (mut bytes, _) = signed("vagrant.", 7, NOW);
        bytes[13] ^= 1;
        if let Ok(message) = Message::from_vec(&bytes) {
            assert!(matches!(
                check(&bytes, &message, &keys, NOW),
                Checked::BadSig(_) | Checked::UnknownKey(_)
            ));
        }
        let mut plain = Message::new(1, MessageType::Query, OpCode::Update);
        plain.add_query(Query::query(
            Name::from_ascii("sean.").expect("zone"),
            RecordType::SOA,
        ));
        let bytes = plain.to_vec().expect("encode");
        assert!(matches!(checked(&bytes, &keys, NOW), Checked::Unsigned));
    }

    #[test]
    fn refusals_carry_the_tsig_error_rfc_8945_asks_for() {
        let keys = [key("vagrant", 7)];
        let (bytes, _) = signed("vagrant.", 7, NOW);
        let Checked::Valid(request) = checked(&bytes, &keys, NOW) else {
            panic!("not valid");
        };
        let bad_time = response(
            1,
            ResponseCode::NotAuth,
            Signing::Signed {
                request: &request,
                bad_time: true,
            },
            NOW + 999,
        )
        .expect("signed");
        let parsed = Message::from_vec(&bad_time).expect("parse");
        assert_eq!(parsed.metadata.response_code, ResponseCode::NotAuth);
        let tsig = &parsed.signature().expect("tsig").data;
        assert_eq!(tsig.error, Some(TsigError::BadTime));
        assert_eq!(
            tsig.other,
            (NOW + 999).to_be_bytes()[2..].to_vec(),
            "our clock"
        );
        let name = Name::from_ascii("stranger.").expect("name");
        let bad_key =
            response(1, ResponseCode::NotAuth, Signing::BadKey(&name), NOW).expect("bad key");
        let parsed = Message::from_vec(&bad_key).expect("parse");
        let tsig = &parsed.signature().expect("tsig").data;
        assert_eq!(tsig.error, Some(TsigError::BadKey));
        assert!(tsig.mac.is_empty(), "BADKEY is unsigned");
        let plain = response(1, ResponseCode::Refused, Signing::None, NOW).expect("plain");
        assert_eq!(plain.len(), 12, "a header alone");
    }
}
