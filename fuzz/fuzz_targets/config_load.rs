//! Arbitrary text as a config file, through the whole loader
//! (`gatehouse_config::parse`: YAML events for locations, serde, validation).
//!
//! Properties: never a panic, always `Ok` or `Err`; an error is a list of
//! located problems, and no problem quotes more than a bounded part of the
//! file (a config may hold secrets elsewhere, so an error quotes at most
//! the offending value, cut short when long).

#![no_main]

use std::path::Path;

use gatehouse_config::ConfigError;
use libfuzzer_sys::fuzz_target;

/// Relative paths in the config (`keys_file`, ...) resolve under a folder
/// that does not exist, so the loader's file reads fail fast.
const PATH: &str = "/nonexistent/gatehouse-fuzz/gatehouse.yaml";

/// The longest problem message we accept: a path, one value (cut short when
/// long) and the reason fit easily; a swallowed section of the file does not.
const MAX_PROBLEM_LEN: usize = 1024;

fuzz_target!(|text: &str| {
    let Err(error) = gatehouse_config::parse(Path::new(PATH), text) else {
        return;
    };
    let ConfigError::Invalid { problems, .. } = &error else {
        panic!("parse can only find the text invalid, got: {error}");
    };
    assert!(!problems.is_empty(), "an error without a problem");
    for problem in problems {
        assert!(
            problem.message.len() <= MAX_PROBLEM_LEN,
            "a problem of {} bytes: {}",
            problem.message.len(),
            problem.message
        );
        assert!(problem.location.line >= 1 && problem.location.column >= 1);
    }
    let shown = error.to_string();
    assert_eq!(
        shown.lines().count(),
        problems.len(),
        "one line per problem"
    );
});
