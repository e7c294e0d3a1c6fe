//! The git commit `gatehouse --version` reports (`GATEHOUSE_COMMIT`):
//! `git rev-parse --short=12 HEAD` when built from a checkout, else
//! "unknown" (a source tarball), or `GATEHOUSE_COMMIT` from the
//! environment when a packager sets it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GATEHOUSE_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("GATEHOUSE_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|c| !c.is_empty())
    });
    println!(
        "cargo:rustc-env=GATEHOUSE_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}
