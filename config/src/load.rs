//! Reading a config file: YAML syntax and types first (serde_yaml), then
//! meaning (validation), with every error located in the file.

use std::path::Path;

use crate::{
    error::{ConfigError, Problem},
    locate::{Location, Locator},
    model::Config,
    raw::RawConfig,
    validate,
};

/// Read, parse and validate the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parse and validate `text` as if read from `path`. Relative paths inside the
/// config (`state_dir`, `keys_file`, ...) are taken relative to `path`'s folder.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |location, message| ConfigError::Invalid {
        file: path.to_owned(),
        problems: vec![Problem { location, message }],
    };
    let locator = Locator::index(text).map_err(|e| invalid(e.location, e.message))?;
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
        let location = e
            .location()
            .map(|l| Location {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or(Location { line: 1, column: 1 });
        invalid(location, strip_location(&e.to_string()))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate::config(raw, path, base, &locator).map_err(|mut problems| {
        problems.sort_by_key(|p| (p.location.line, p.location.column));
        ConfigError::Invalid {
            file: path.to_owned(),
            problems,
        }
    })
}

/// serde_yaml appends " at line L column C"; we put the location in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}
