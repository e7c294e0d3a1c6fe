//! An `exec` request's command line into the `nc` parser: an authenticated
//! user chooses these bytes.
//!
//! Properties: never a panic; whatever is accepted names nc, one non-empty
//! host word and a port in 1-65535, and a connect timeout of 1-60 s.

#![no_main]

use std::time::Duration;

use gatehouse_jump::parse_nc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|command: &[u8]| {
    let Ok(nc) = parse_nc(command) else {
        return;
    };
    let text = std::str::from_utf8(command).expect("accepted commands are UTF-8");
    let first = text.split_whitespace().next();
    assert!(
        matches!(first, Some("nc" | "netcat" | "ncat")),
        "{text:?} is not nc"
    );
    assert!(!nc.host.is_empty(), "{text:?}: empty host");
    assert!(
        !nc.host.contains(char::is_whitespace),
        "{text:?}: host {:?} is not one word",
        nc.host
    );
    assert!(
        text.split_whitespace().any(|w| w == nc.host),
        "{text:?}: host {:?} is not a word of the command",
        nc.host
    );
    assert_ne!(nc.port, 0, "{text:?}: port 0");
    if let Some(timeout) = nc.connect_timeout {
        assert!(
            (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&timeout),
            "{text:?}: timeout {timeout:?}"
        );
    }
});
