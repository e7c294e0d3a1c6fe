//! Where in the YAML text a value stands.
//!
//! serde_yaml reports line and column for syntax and type errors, but not for
//! the values it parsed successfully. Validation errors found afterwards
//! (an unknown group, a duplicate record, a key that does not parse) must still
//! name their line, so this module walks the YAML events once and remembers
//! the position of every node by its dotted path (`jump.groups.dev.allow[1]`).
//! The same walk refuses duplicate mapping keys, which YAML forbids but
//! serde would silently collapse.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1.
    pub column: usize,
}

/// Positions of every node of one YAML document, by path.
#[derive(Debug, Default)]
pub(crate) struct Locator {
    nodes: HashMap<String, Location>,
}

/// A duplicate key or a syntax error found while indexing.
#[derive(Debug)]
pub(crate) struct LocateError {
    pub location: Location,
    pub message: String,
}

enum Frame {
    Mapping {
        path: String,
        key: Option<String>,
        seen: HashSet<String>,
    },
    Sequence {
        path: String,
        index: usize,
    },
}

impl Frame {
    /// The path of the child that the next node event is, if it is a value.
    fn child_path(&self) -> Option<String> {
        match self {
            Frame::Mapping { key: None, .. } => None,
            Frame::Mapping {
                path, key: Some(k), ..
            } => Some(join_key(path, k)),
            Frame::Sequence { path, index } => Some(format!("{path}[{index}]")),
        }
    }
}

/// `parent.key`, or just `key` at the top.
pub(crate) fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Locator {
    pub(crate) fn index(text: &str) -> Result<Self, LocateError> {
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut nodes = HashMap::new();
        loop {
            let (event, mark) = parser.next_token().map_err(|e| LocateError {
                location: Location {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                message: e.info().to_owned(),
            })?;
            let here = Location {
                line: mark.line(),
                column: mark.col() + 1,
            };
            match event {
                Event::StreamEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Mapping {
                        key: key @ None,
                        seen,
                        path,
                    }) = stack.last_mut()
                    {
                        if !seen.insert(value.clone()) {
                            return Err(LocateError {
                                location: here,
                                message: format!(
                                    "{}: duplicate key `{value}`",
                                    if path.is_empty() { "(top)" } else { path }
                                ),
                            });
                        }
                        *key = Some(value);
                        continue;
                    }
                    Self::value_done(&mut stack, &mut nodes, here);
                }
                Event::Alias(_) => Self::value_done(&mut stack, &mut nodes, here),
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = match stack.last() {
                        Some(frame) => match frame.child_path() {
                            Some(p) => p,
                            // A complex (non-scalar) mapping key: we never use those.
                            None => String::from("?"),
                        },
                        None => String::new(),
                    };
                    nodes.insert(path.clone(), here);
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Mapping {
                            path,
                            key: None,
                            seen: HashSet::new(),
                        }
                    } else {
                        Frame::Sequence { path, index: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    Self::advance(&mut stack);
                }
                _ => {}
            }
        }
        Ok(Self { nodes })
    }

    fn value_done(stack: &mut [Frame], nodes: &mut HashMap<String, Location>, here: Location) {
        match stack.last() {
            Some(frame) => {
                if let Some(path) = frame.child_path() {
                    nodes.insert(path, here);
                }
            }
            None => {
                nodes.insert(String::new(), here);
            }
        }
        Self::advance(stack);
    }

    /// After a complete value: a mapping wants its next key, a sequence its next item.
    fn advance(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Mapping { key, .. }) => *key = None,
            Some(Frame::Sequence { index, .. }) => *index += 1,
            None => {}
        }
    }

    /// The position of the node at `path`, or of its nearest ancestor that exists.
    pub(crate) fn find(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(loc) = self.nodes.get(path) {
                return Some(*loc);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
a:
  b: 1
  list:
    - x
    - { y: 2 }
c: [1, 2]
";

    #[test]
    fn finds_nested_values() {
        let loc = Locator::index(DOC).expect("valid yaml");
        assert_eq!(loc.find("a.b"), Some(Location { line: 2, column: 6 }));
        assert_eq!(loc.find("a.list[0]"), Some(Location { line: 4, column: 7 }));
        assert_eq!(
            loc.find("a.list[1].y"),
            Some(Location {
                line: 5,
                column: 12
            })
        );
        assert_eq!(loc.find("c[1]"), Some(Location { line: 6, column: 8 }));
        // A missing leaf falls back to its parent.
        assert_eq!(loc.find("a.missing").map(|l| l.line), Some(2));
    }

    #[test]
    fn refuses_duplicate_keys() {
        let err = Locator::index("a:\n  b: 1\n  b: 2\n").expect_err("duplicate");
        assert_eq!(err.location, Location { line: 3, column: 3 });
        assert!(err.message.contains("duplicate key `b`"), "{}", err.message);
    }
}
