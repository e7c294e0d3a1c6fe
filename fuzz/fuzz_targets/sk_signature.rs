//! A FIDO security key's signature blob (what a client sends in its
//! `publickey` request) into the decoding and judging the server does
//! after russh verified it: the client chooses these bytes.
//!
//! Properties: never a panic; only a verified signature is a whole login
//! under `verify-required`, and only a touched one passes where touch is
//! required.

#![no_main]

use gatehouse_config::KeyOptions;
use gatehouse_jump::{SecurityKeyVerdict, judge_signature_blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|blob: &[u8]| {
    let strict = KeyOptions {
        no_touch_required: false,
        verify_required: true,
    };
    let Some(verdict) = judge_signature_blob(blob, strict) else {
        return;
    };
    // The flags byte is the fifth from the end of an sk- signature.
    let flags = blob[blob.len() - 5];
    let expected = match (flags & 0x01 != 0, flags & 0x04 != 0) {
        (false, _) => SecurityKeyVerdict::NoTouch,
        (true, false) => SecurityKeyVerdict::NotVerified,
        (true, true) => SecurityKeyVerdict::WholeLogin,
    };
    assert_eq!(verdict, expected, "flags {flags:#04x}");
    let relaxed = judge_signature_blob(blob, KeyOptions::default());
    assert!(
        matches!(
            relaxed,
            Some(SecurityKeyVerdict::FirstFactor | SecurityKeyVerdict::NoTouch)
        ),
        "{relaxed:?}: without verify-required, never a whole login"
    );
});
