//! Hostile bytes as an RFC 2136 UPDATE, through the update pipeline
//! (`gatehouse_dns::judge_update`: parse, TSIG, prerequisites and updates,
//! the response). The first byte picks how the rest is used: as the request
//! itself (a fuzzer cannot forge a MAC, so this explores parsing and every
//! TSIG refusal), or as a message that is parsed, re-signed here with the
//! configured key and then judged (so the decision itself is reached).
//!
//! Properties: never a panic; a response is a DNS response with the
//! request's ID and opcode UPDATE; the response to a validly signed update
//! carries a MAC the client's verifier accepts; names an update leads to
//! survive the state file's round trip and build a zone table.

#![no_main]

use std::{path::Path, sync::LazyLock};

use gatehouse_config::DnsConfig;
use gatehouse_dns::{
    Names, ZoneTable, judge_update,
    proto::{
        op::{Message, MessageType, OpCode},
        rr::{Name, TSigner, rdata::tsig::TsigAlgorithm},
    },
};
use libfuzzer_sys::fuzz_target;

/// The key's secret: the one the seeds were signed with (fuzz/seed.py).
const SECRET: &str = "2bcS0V0oq3K2KqwqGWq9Vu0UhXkmiu8zQ1dVrKrVGzg=";

/// When the seeds were signed; the fuzzer's "now" stays there.
const NOW: u64 = 1_765_000_000;

static SETUP: LazyLock<(DnsConfig, Names, Vec<u8>)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("vagrant.key");
    std::fs::write(&key, SECRET).expect("key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let yaml = format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  zones:\n    sean:\n      records:\n        saxophone: 192.168.222.16\n    other:\n      records: {{}}\n  reverse: [10.0.0.0/24]\n  update_keys:\n    vagrant:\n      algorithm: hmac-sha256\n      secret_file: {}\n      zones: [sean]\n      max_names: 4\n",
        key.display()
    );
    let config = gatehouse_config::parse(Path::new("fuzz.yaml"), &yaml).expect("config");
    let dns = config.dns.expect("dns");
    let secret = dns.update_keys[0].secret.bytes().to_vec();
    // One name already there, so deletes and prerequisites find something.
    let names = Names::from_json(
        br#"{"version":1,"serial":7,"names":[{"name":"trumpet.sean","zone":"sean","key":"vagrant","source":"192.0.2.9","added":1,"changed":1,"addrs":["10.0.0.5","fd00::5"]}]}"#,
    )
    .expect("names");
    (dns, names, secret)
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (dns, names, secret) = &*SETUP;
    let mut verifier = None;
    let request = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Ok(mut message) = Message::from_vec(rest) else {
            return;
        };
        message.metadata.message_type = MessageType::Query;
        message.metadata.op_code = OpCode::Update;
        drop(message.take_signature());
        let signer = TSigner::new(
            secret.clone(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("vagrant.").expect("name"),
            300,
        )
        .expect("signer");
        let Ok((record, v)) = signer.sign_message(&message, NOW) else {
            return;
        };
        message.set_signature(record);
        verifier = v;
        match message.to_vec() {
            Ok(bytes) => bytes,
            Err(_) => return,
        }
    };
    let Some((response, next)) = judge_update(&request, dns, names, NOW) else {
        return;
    };
    let parsed = Message::from_vec(&response).expect("our response parses");
    assert_eq!(parsed.metadata.message_type, MessageType::Response);
    assert_eq!(parsed.metadata.op_code, OpCode::Update);
    assert_eq!(&response[..2], &request[..2], "the request's ID");
    if let Some(verifier) = verifier.as_mut() {
        verifier
            .verify(&response)
            .expect("the client accepts the signed response");
    }
    if let Some(next) = next {
        let back = Names::from_json(&next.to_json()).expect("the names file round-trips");
        assert_eq!(back, next);
        let _table = ZoneTable::with_serial(&next.merged(dns), 1);
    }
});
