//! The one error a config can fail with, wherever in loading it failed.
//!
//! A config error is read by a person fixing a file, so it is a record of where (file,
//! line:column, key path), what (expected and found) and what to do next (the hint), not an
//! enum of causes: the CLI maps every config error to the same exit code.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::locate::{self, Anchor, KeyPath};

/// A config file that could not be read, parsed or validated, or a name that is not in it.
///
/// Displays as `<file>:<line>:<column>: <key>: <message>`, leaving out the parts that are
/// unknown; [`ConfigError::hint`] says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// The config file, as it was given (relative paths stay relative).
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: Option<usize>,
    /// 1-based column, counted in characters.
    pub column: Option<usize>,
    /// The dotted key path, such as `services.hello.health.interval`.
    pub key: Option<String>,
    /// What was expected and what was found.
    pub message: String,
    /// What to do about it.
    pub(crate) hint: Option<String>,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets line and column from a byte offset into the config's text.
    pub(crate) fn at_offset(mut self, text: &str, offset: usize) -> Self {
        let (line, column) = line_column(text, offset);
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

/// 1-based line and character column of a byte offset; an offset past the end (or inside a
/// multi-byte character) is clamped to the nearest character boundary before it.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A problem found in the parsed config, before it is placed in the file's text.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) path: KeyPath,
    pub(crate) anchor: Anchor,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Problem {
    /// A problem with the value at `path`.
    pub(crate) fn value(path: KeyPath, message: impl Into<String>) -> Self {
        Problem {
            path,
            anchor: Anchor::Value,
            message: message.into(),
            hint: None,
        }
    }

    /// A problem with the key at the end of `path` (its name, or its being there at all).
    pub(crate) fn key(path: KeyPath, message: impl Into<String>) -> Self {
        Problem {
            anchor: Anchor::Key,
            ..Problem::value(path, message)
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error for `file`, with line:column found by walking `text` along the key path.
    pub(crate) fn into_error(self, file: &Path, text: &str) -> ConfigError {
        let mut error = ConfigError::new(file, self.message);
        if !self.path.is_root() {
            error.key = Some(self.path.to_string());
        }
        error.hint = self.hint;
        match locate::span(text, &self.path, self.anchor) {
            Some(span) => error.at_offset(text, span.start),
            None => error,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_leaves_out_unknown_parts() {
        let bare = ConfigError::new(Path::new("shipit.toml"), "no services");
        assert_eq!(bare.to_string(), "shipit.toml: no services");

        let full = ConfigError::new(Path::new("shipit.toml"), "bad")
            .with_key("services.hello.port")
            .with_hint("fix it")
            .at_offset("a = 1\n  port = 0\n", 8);
        assert_eq!(
            full.to_string(),
            "shipit.toml:2:3: services.hello.port: bad"
        );
        assert_eq!(full.hint().as_deref(), Some("fix it"));
    }

    #[test]
    fn column_counts_characters_not_bytes() {
        assert_eq!(line_column("é = 1", 3), (1, 3));
        assert_eq!(line_column("a\nb", 2), (2, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
