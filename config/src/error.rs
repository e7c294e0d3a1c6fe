//! Configuration errors, each pointing at file, line and column.

use std::{fmt, io, path::PathBuf};

use crate::locate::Location;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", Problems { file, problems })]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

/// One problem in a config file. The message starts with the dotted path of
/// the offending value; it never quotes more than that value (a config file
/// may hold secrets elsewhere), and it is one line of at most 512 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub location: Location,
    /// What was wrong, for a person.
    pub message: String,
}

/// The longest problem message, in bytes: a path, one value and the reason
/// fit; longer messages are cut in the middle.
pub(crate) const MAX_PROBLEM_LEN: usize = 512;

impl Problem {
    /// A problem at `location`. The message is made one line (control
    /// characters escaped as `\n`, `\u{1b}`, ...) and cut in the middle to
    /// [`MAX_PROBLEM_LEN`] bytes: a key with a line break (serde quotes
    /// unknown fields raw) must not print as two problems, nor carry a
    /// terminal escape; a value that swallowed part of the file through a
    /// missing quote must not print that part (both found by fuzz/'s
    /// config_load target).
    pub(crate) fn new(location: Location, message: &str) -> Problem {
        Problem {
            location,
            message: bounded(&one_line(message)),
        }
    }
}

fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most [`MAX_PROBLEM_LEN`] bytes: the start (the path) and the end (the
/// reason) of `text`, joined by `…` where the middle was cut.
fn bounded(text: &str) -> String {
    if text.len() <= MAX_PROBLEM_LEN {
        return text.to_owned();
    }
    let cut = "…";
    let keep = (MAX_PROBLEM_LEN - cut.len()) / 2;
    let mut head = keep;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - keep;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{cut}{}", &text[..head], &text[tail..])
}

struct Problems<'a> {
    file: &'a PathBuf,
    problems: &'a [Problem],
}

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                p.location.line,
                p.location.column,
                p.message
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: Location = Location { line: 1, column: 1 };

    #[test]
    fn short_messages_are_kept() {
        let p = Problem::new(
            TOP,
            "jump.mfa: \"sometimes\": expected required or optional",
        );
        assert_eq!(
            p.message,
            "jump.mfa: \"sometimes\": expected required or optional"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let p = Problem::new(TOP, "unknown field `a\n\nb\u{1b}[2J\r`, expected one of");
        assert_eq!(
            p.message,
            "unknown field `a\\n\\nb\\u{1b}[2J\\r`, expected one of"
        );
        assert_eq!(p.message.lines().count(), 1);
    }

    #[test]
    fn long_messages_keep_their_start_and_end() {
        let value = "é".repeat(2000);
        let p = Problem::new(
            TOP,
            &format!("jump.listen[0]: \"{value}\": expected IP:PORT"),
        );
        assert!(p.message.len() <= MAX_PROBLEM_LEN, "{}", p.message.len());
        assert!(
            p.message.starts_with("jump.listen[0]: \"éé"),
            "{}",
            p.message
        );
        assert!(
            p.message.ends_with("éé\": expected IP:PORT"),
            "{}",
            p.message
        );
        assert_eq!(p.message.matches('…').count(), 1);
    }
}
