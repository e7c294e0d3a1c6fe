//! `jump.mfa_grace` and `jump.groups.NAME.mfa_grace` (issue 28): how long
//! a key + code login spares the same key from the same source its code.
//! Zero (`0` or `off`) is off, the default; whole seconds; at most
//! [`MAX_MFA_GRACE`]; a group may only lower the jump-wide value.
//! Must not touch the other settings.

use std::time::Duration;

use super::Checker;
use crate::{model::MAX_MFA_GRACE, values::parse_duration};

/// `text` as a grace: `0`/`off` or a duration of whole seconds up to
/// [`MAX_MFA_GRACE`]. `None` when absent; a problem at `path` when bad.
fn parse_grace(text: &str) -> Result<Duration, String> {
    if matches!(text.trim(), "0" | "off") {
        return Ok(Duration::ZERO);
    }
    let grace = parse_duration(text)?;
    if grace.subsec_nanos() != 0 {
        return Err("must be whole seconds, e.g. 30s, 5m, 8h".into());
    }
    if grace > MAX_MFA_GRACE {
        return Err("at most 12h: one code a working day at the very most".into());
    }
    Ok(grace)
}

/// `jump.mfa_grace`.
pub(super) fn mfa_grace(c: &mut Checker<'_>, path: &str, text: Option<&str>) -> Option<Duration> {
    c.value(path, text?, parse_grace)
}

/// A group's `mfa_grace`, which may only lower `jump_wide` (`None`: that
/// one was refused, so no comparison).
pub(super) fn group_mfa_grace(
    c: &mut Checker<'_>,
    group: &str,
    text: Option<&str>,
    jump_wide: Option<Duration>,
) -> Option<Duration> {
    let path = format!("{group}.mfa_grace");
    let grace = mfa_grace(c, &path, text)?;
    let Some(jump_wide) = jump_wide else {
        return Some(grace);
    };
    if grace > jump_wide {
        c.problem(
            &path,
            format!(
                "{}s is more than jump.mfa_grace ({}s): a group may only lower it",
                grace.as_secs(),
                jump_wide.as_secs()
            ),
        );
        return None;
    }
    Some(grace)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{ConfigError, load::parse};

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK1dTTVTtn4JwyiQdj4r0dSAaAiTbAKgVWl7VZBO6m2j sean@laptop";

    fn config(jump_grace: &str, group_grace: &str) -> String {
        format!(
            "jump:\n  listen: [\"127.0.0.1:0\"]\n{jump_grace}  users:\n    sean:\n      keys: [\"{KEY}\"]\n      groups: [dev, prod]\n    ana:\n      keys: [\"{KEY}\"]\n      groups: [dev]\n  groups:\n    dev:\n      allow: [\"10.0.0.0/8:22\"]\n    prod:\n      allow: [\"10.0.0.0/8:22\"]\n{group_grace}"
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("g.yaml"), text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(ConfigError::Invalid { problems, .. }) => problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.location.line, p.location.column, p.message))
                .collect(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn off_by_default_and_a_user_gets_the_smallest_of_their_groups() {
        let c = parse(Path::new("g.yaml"), &config("", "")).expect("valid");
        let jump = c.jump.expect("jump");
        assert_eq!(jump.mfa_grace_for("sean"), std::time::Duration::ZERO);

        let text = config("  mfa_grace: 30m\n", "      mfa_grace: 5m\n");
        let jump = parse(Path::new("g.yaml"), &text)
            .expect("valid")
            .jump
            .expect("jump");
        assert_eq!(jump.mfa_grace.as_secs(), 1800);
        assert_eq!(jump.mfa_grace_for("sean").as_secs(), 300, "prod lowers it");
        assert_eq!(jump.mfa_grace_for("ana").as_secs(), 1800);
        assert_eq!(jump.mfa_grace_for("nobody").as_secs(), 0);

        for off in ["0", "off"] {
            let text = config(&format!("  mfa_grace: {off}\n"), "");
            let jump = parse(Path::new("g.yaml"), &text)
                .expect("valid")
                .jump
                .expect("jump");
            assert_eq!(jump.mfa_grace_for("ana").as_secs(), 0, "{off}");
        }
        let text = config("  mfa_grace: 12h\n", "      mfa_grace: off\n");
        let jump = parse(Path::new("g.yaml"), &text)
            .expect("valid")
            .jump
            .expect("jump");
        assert_eq!(
            jump.mfa_grace_for("sean").as_secs(),
            0,
            "a group turns it off"
        );
        assert_eq!(jump.mfa_grace_for("ana").as_secs(), 12 * 3600);
    }

    #[test]
    fn bad_graces_are_located() {
        assert_eq!(
            errors(&config("  mfa_grace: 13h\n", "")),
            ["3:14: jump.mfa_grace: \"13h\": at most 12h: one code a working day at the very most"]
        );
        assert_eq!(
            errors(&config("  mfa_grace: 1500ms\n", "")),
            ["3:14: jump.mfa_grace: \"1500ms\": must be whole seconds, e.g. 30s, 5m, 8h"]
        );
        assert_eq!(
            errors(&config("  mfa_grace: soon\n", "")),
            ["3:14: jump.mfa_grace: \"soon\": expected a duration such as 30s, 10m, 24h"]
        );
        assert_eq!(
            errors(&config("  mfa_grace: 5m\n", "      mfa_grace: 10m\n")),
            [
                "16:18: jump.groups.prod.mfa_grace: 600s is more than jump.mfa_grace (300s): a \
                 group may only lower it"
            ]
        );
        // A refused jump-wide grace is no yardstick for the groups'.
        assert_eq!(
            errors(&config("  mfa_grace: 13h\n", "      mfa_grace: 10m\n")).len(),
            1
        );
        assert_eq!(
            errors(&config("", "      mfa_grace: 10m\n")),
            [
                "15:18: jump.groups.prod.mfa_grace: 600s is more than jump.mfa_grace (0s): a \
                 group may only lower it"
            ]
        );
    }
}
