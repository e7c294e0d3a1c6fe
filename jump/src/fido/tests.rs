//! Security-key signatures built by hand over the PROTOCOL.u2f blob
//! (SHA-256(application) ‖ flags ‖ counter ‖ SHA-256(message)) with
//! ed25519 and P-256 keys, read back as russh reads them off the wire and
//! verified with ssh-key, then judged.

use russh::keys::{
    EcdsaCurve, PublicKey,
    signature::{Signer, Verifier},
    ssh_encoding::{Decode, Encode},
    ssh_key::{
        Algorithm, Signature,
        private::{EcdsaKeypair, Ed25519Keypair},
        public::{KeyData, SkEcdsaSha2NistP256, SkEd25519},
    },
};
use sha2::{Digest, Sha256};

use super::*;

const APPLICATION: &str = "ssh:";
/// What the server signs over: in SSH, the session id and the request.
const MESSAGE: &[u8] = b"session id and userauth request";

/// A software token: an ed25519 or P-256 key that signs like a FIDO one.
enum Token {
    Ed25519(Ed25519Keypair),
    P256(EcdsaKeypair),
}

impl Token {
    fn ed25519() -> Self {
        Token::Ed25519(Ed25519Keypair::from_seed(&[7; 32]))
    }

    fn p256() -> Self {
        Token::P256(EcdsaKeypair::random(&mut rand::rng(), EcdsaCurve::NistP256).expect("p256"))
    }

    fn public(&self) -> PublicKey {
        let data = match self {
            Token::Ed25519(k) => KeyData::SkEd25519(SkEd25519::new(k.public, APPLICATION)),
            Token::P256(EcdsaKeypair::NistP256 { public, .. }) => {
                KeyData::SkEcdsaSha2NistP256(SkEcdsaSha2NistP256::new(*public, APPLICATION))
            }
            Token::P256(_) => unreachable!("P-256 only"),
        };
        PublicKey::new(data, "token")
    }

    /// The signature as it travels (RFC 4253 string `sk-…`, string inner
    /// signature, byte flags, uint32 counter), over `message`.
    fn sign_wire(&self, message: &[u8], flags: u8, counter: u32) -> Vec<u8> {
        let mut blob = Sha256::digest(APPLICATION).to_vec();
        blob.push(flags);
        blob.extend(counter.to_be_bytes());
        blob.extend(Sha256::digest(message));
        let (name, inner) = match self {
            Token::Ed25519(k) => ("sk-ssh-ed25519@openssh.com", k.try_sign(&blob)),
            Token::P256(k) => ("sk-ecdsa-sha2-nistp256@openssh.com", k.try_sign(&blob)),
        };
        let inner = inner.expect("sign");
        let mut wire = Vec::new();
        name.encode(&mut wire).expect("encode");
        inner.as_bytes().encode(&mut wire).expect("encode");
        wire.push(flags);
        wire.extend(counter.to_be_bytes());
        wire
    }
}

/// What russh does with a signature off the wire: decode it, verify it
/// against the key, and take its flags and counter (patch 0008).
fn receive(key: &PublicKey, wire: &[u8]) -> Result<SecurityKeySignature, &'static str> {
    let mut reader = wire;
    let sig = Signature::decode(&mut reader).map_err(|_| "does not decode")?;
    if !reader.is_empty() {
        return Err("trailing bytes");
    }
    Verifier::verify(key, MESSAGE, &sig).map_err(|_| "signature wrong")?;
    SecurityKeySignature::of(&sig).ok_or("not a security key signature")
}

const TOUCH: u8 = SecurityKeySignature::USER_PRESENT;
const VERIFIED: u8 = SecurityKeySignature::USER_PRESENT | SecurityKeySignature::USER_VERIFIED;

fn line(no_touch_required: bool, verify_required: bool) -> Required {
    Required::of_key(KeyOptions {
        no_touch_required,
        verify_required,
    })
}

#[test]
fn every_flag_combination_against_every_key_line() {
    use SecurityKeyVerdict::{FirstFactor, NoTouch, NotVerified, WholeLogin};
    // (no-touch-required, verify-required) on the line, flags signed, verdict:
    // OpenSSH's auth2-pubkey.c, and a verified verify-required key is a
    // whole login.
    let table = [
        ((false, false), TOUCH, FirstFactor),
        ((false, false), 0x00, NoTouch),
        ((false, false), VERIFIED, FirstFactor),
        ((false, false), SecurityKeySignature::USER_VERIFIED, NoTouch),
        ((true, false), 0x00, FirstFactor),
        ((true, false), TOUCH, FirstFactor),
        ((false, true), VERIFIED, WholeLogin),
        ((false, true), TOUCH, NotVerified),
        ((false, true), 0x00, NoTouch),
        ((false, true), SecurityKeySignature::USER_VERIFIED, NoTouch),
        (
            (true, true),
            SecurityKeySignature::USER_VERIFIED,
            WholeLogin,
        ),
        ((true, true), 0x00, NotVerified),
        // Bits OpenSSH does not look at change nothing.
        ((false, false), TOUCH | 0x40 | 0x80, FirstFactor),
    ];
    for token in [Token::ed25519(), Token::p256()] {
        let key = token.public();
        for ((no_touch, verify), flags, expected) in table {
            let sk = receive(&key, &token.sign_wire(MESSAGE, flags, 7)).expect("verifies");
            assert_eq!(sk.flags, flags);
            assert_eq!(sk.counter, 7);
            assert_eq!(
                judge(line(no_touch, verify), sk),
                expected,
                "{:?}: line no-touch-required={no_touch} verify-required={verify}, flags {flags:#04x}",
                key.algorithm()
            );
        }
    }
}

#[test]
fn flags_are_bound_by_the_signature() {
    for token in [Token::ed25519(), Token::p256()] {
        let key = token.public();
        // Signed without touch, then the flags byte rewritten to claim touch
        // and verification: the signature no longer verifies.
        let mut wire = token.sign_wire(MESSAGE, 0x00, 1);
        let flags_at = wire.len() - 5;
        wire[flags_at] = VERIFIED;
        assert_eq!(receive(&key, &wire), Err("signature wrong"));
        // Likewise a counter moved forward.
        let mut wire = token.sign_wire(MESSAGE, TOUCH, 1);
        let last = wire.len() - 1;
        wire[last] = 9;
        assert_eq!(receive(&key, &wire), Err("signature wrong"));
        // And a signature over another message.
        let other = token.sign_wire(b"another session", TOUCH, 1);
        assert_eq!(receive(&key, &other), Err("signature wrong"));
    }
}

#[test]
fn malformed_signatures_are_refused_before_any_flag_is_read() {
    let token = Token::ed25519();
    let key = token.public();
    let good = token.sign_wire(MESSAGE, TOUCH, 1);
    // Cut anywhere: never a signature (the trailer is missing or short).
    for cut in 0..good.len() {
        assert!(receive(&key, &good[..cut]).is_err(), "cut at {cut}");
    }
    // A byte too many.
    let mut long = good.clone();
    long.push(0);
    assert_eq!(receive(&key, &long), Err("trailing bytes"));
    // An inner signature of the wrong length (63 bytes).
    let mut short_inner = Vec::new();
    "sk-ssh-ed25519@openssh.com"
        .encode(&mut short_inner)
        .expect("encode");
    [1_u8; 63]
        .as_slice()
        .encode(&mut short_inner)
        .expect("encode");
    short_inner.extend([TOUCH, 0, 0, 0, 1]);
    assert_eq!(receive(&key, &short_inner), Err("does not decode"));
    // A P-256 inner signature that is no pair of integers.
    let p256 = Token::p256();
    let mut garbage = Vec::new();
    "sk-ecdsa-sha2-nistp256@openssh.com"
        .encode(&mut garbage)
        .expect("encode");
    [0xff_u8; 40]
        .as_slice()
        .encode(&mut garbage)
        .expect("encode");
    garbage.extend([TOUCH, 0, 0, 0, 1]);
    assert!(receive(&p256.public(), &garbage).is_err());
    // A plain ed25519 signature has no flags to judge: never taken for a
    // security key's.
    let plain = Ed25519Keypair::from_seed(&[7; 32]);
    let sig: Signature = plain.try_sign(MESSAGE).expect("sign");
    assert_eq!(sig.algorithm(), Algorithm::Ed25519);
    assert_eq!(SecurityKeySignature::of(&sig), None);
}

#[test]
fn certificates_say_what_they_require() {
    use russh::keys::ssh_key::certificate::{Builder, CertType};
    let token = Token::ed25519();
    let ca = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&[9; 32]));
    let cert = |critical: &[&str], extensions: &[&str]| {
        let mut b = Builder::new([0; 16], token.public().key_data().clone(), 0, u64::MAX - 1)
            .expect("builder");
        b.cert_type(CertType::User).expect("type");
        b.valid_principal("sean").expect("principal");
        for c in critical {
            b.critical_option(*c, "").expect("option");
        }
        for e in extensions {
            b.extension(*e, "").expect("extension");
        }
        b.sign(&ca).expect("sign")
    };
    let plain = Required::of_certificate(&cert(&[], &["permit-port-forwarding"]));
    assert_eq!(
        plain,
        Required {
            touch: true,
            verification: false
        }
    );
    let relaxed = Required::of_certificate(&cert(&[], &["no-touch-required"]));
    assert!(!relaxed.touch);
    let verified = Required::of_certificate(&cert(&["verify-required"], &[]));
    assert!(verified.touch && verified.verification);
    let sk = receive(&token.public(), &token.sign_wire(MESSAGE, TOUCH, 3)).expect("verifies");
    assert_eq!(judge(verified, sk), SecurityKeyVerdict::NotVerified);
}

#[test]
fn counters_going_backwards_are_possible_clones() {
    assert_eq!(check_counter(None, 5), CounterCheck::Fresh);
    assert_eq!(check_counter(Some(5), 6), CounterCheck::Fresh);
    assert_eq!(check_counter(Some(5), u32::MAX), CounterCheck::Fresh);
    assert_eq!(
        check_counter(Some(5), 5),
        CounterCheck::PossibleClone { last: 5 },
        "the same counter twice: a second token signed with it"
    );
    assert_eq!(
        check_counter(Some(5), 4),
        CounterCheck::PossibleClone { last: 5 }
    );
    // Tokens without a counter send 0 every time: nothing to compare.
    assert_eq!(check_counter(None, 0), CounterCheck::NoCounter);
    assert_eq!(check_counter(Some(5), 0), CounterCheck::NoCounter);
    // From a real signature's trailer.
    let token = Token::p256();
    let key = token.public();
    let first = receive(&key, &token.sign_wire(MESSAGE, TOUCH, 0x1234_5678)).expect("ok");
    let replayed_counter =
        receive(&key, &token.sign_wire(MESSAGE, TOUCH, 0x1234_5677)).expect("ok");
    assert_eq!(
        check_counter(Some(first.counter), replayed_counter.counter),
        CounterCheck::PossibleClone { last: 0x1234_5678 }
    );
}

#[test]
fn the_fuzz_entry_point_judges_what_the_server_judges() {
    let token = Token::p256();
    let verify = KeyOptions {
        no_touch_required: false,
        verify_required: true,
    };
    let wire = token.sign_wire(MESSAGE, VERIFIED, 1);
    assert_eq!(
        judge_signature_blob(&wire, verify),
        Some(SecurityKeyVerdict::WholeLogin)
    );
    let wire = token.sign_wire(MESSAGE, 0, 1);
    assert_eq!(
        judge_signature_blob(&wire, KeyOptions::default()),
        Some(SecurityKeyVerdict::NoTouch)
    );
    // Cut short, or one byte too many: nothing judged.
    assert_eq!(judge_signature_blob(&wire[..wire.len() - 1], verify), None);
    let mut long = wire.clone();
    long.push(0);
    assert_eq!(judge_signature_blob(&long, verify), None);
    // Not a security key's signature.
    let plain: Signature = Ed25519Keypair::from_seed(&[7; 32])
        .try_sign(MESSAGE)
        .expect("sign");
    let mut blob = Vec::new();
    plain.encode(&mut blob).expect("encode");
    assert_eq!(judge_signature_blob(&blob, verify), None);
}

#[test]
fn the_fuzz_seeds_are_judged_by_their_flags() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sk_signature");
    let verify = KeyOptions {
        no_touch_required: false,
        verify_required: true,
    };
    let mut judged = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/sk_signature (python3 fuzz/seed.py)") {
        let path = entry.expect("entry").path();
        let blob = std::fs::read(&path).expect("seed");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        if let Some(verdict) = judge_signature_blob(&blob, verify) {
            judged.push((name, verdict));
        }
    }
    judged.sort_by(|a, b| a.0.cmp(&b.0));
    let verdict = |name: &str| judged.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(
        verdict("ed25519-flags-05"),
        Some(SecurityKeyVerdict::WholeLogin)
    );
    assert_eq!(
        verdict("ecdsa-flags-05"),
        Some(SecurityKeyVerdict::WholeLogin)
    );
    assert_eq!(
        verdict("ed25519-flags-01"),
        Some(SecurityKeyVerdict::NotVerified)
    );
    assert_eq!(verdict("ecdsa-flags-00"), Some(SecurityKeyVerdict::NoTouch));
    assert_eq!(
        verdict("ed25519-flags-04"),
        Some(SecurityKeyVerdict::NoTouch)
    );
    for malformed in [
        "cut-in-trailer",
        "trailing-byte",
        "inner-63-bytes",
        "plain-ed25519",
        "huge-length",
        "ecdsa-not-integers",
    ] {
        assert_eq!(verdict(malformed), None, "{malformed}");
    }
    assert_eq!(judged.len(), 14, "12 flag seeds and 2 counters: {judged:?}");
}
