//! `env_file`: a service's environment read from a dotenv file beside the config.
//!
//! The file holds secrets, so it is read strictly and none of its values is ever echoed: an
//! error names the file, the line and what was expected, never the line's text. The syntax is
//! the common dotenv subset:
//!
//! ```text
//! # a comment line; blank lines are skipped
//! DB_USER=app                      # unquoted: to the end of the line or a ` #` comment
//! export DB_HOST = db.internal     # an `export ` prefix, spaces around `=`
//! DB_PASSWORD='s3cr3t # not a comment'    # single quotes: taken as written
//! GREETING="line one\nline two"    # double quotes: \n \t \r \" \\ \$ escapes
//! ```
//!
//! A value is on one line (a newline inside one is written `\n` in double quotes). `${VAR}`
//! is not expanded in the file: its values are taken as written. A name set twice is an
//! error, and so is a name set both in the file and in the service's `env` table.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::interpolate::is_var_name;

/// A service's `env_file`, as `config check` shows it: where it is and the names it sets,
/// never its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvFile {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// The variable names it sets, in the file's order.
    pub keys: Vec<String>,
}

/// One `NAME=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) value: String,
    /// 1-based.
    pub(crate) line: usize,
}

/// What is wrong with one line of the file (never its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    /// 1-based.
    pub(crate) line: usize,
    pub(crate) message: String,
}

/// The entries of a dotenv file's `text`, in order; the first bad line is an error.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, LineError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw_line) in text.split('\n').enumerate() {
        let line = index + 1;
        let error = |message: String| LineError { line, message };
        let content = raw_line.strip_suffix('\r').unwrap_or(raw_line).trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let content = content
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(content, str::trim_start);
        let Some((name, rest)) = content.split_once('=') else {
            return Err(error(
                "expected NAME=value (or a # comment); the line has no `=`".to_string(),
            ));
        };
        let name = name.trim_end();
        if !is_var_name(name) {
            return Err(error(
                "the name before `=` is not a variable name: expected letters, digits and _, \
                 not starting with a digit"
                    .to_string(),
            ));
        }
        if let Some(first) = entries.iter().find(|e| e.name == name) {
            return Err(error(format!(
                "{name} is set again; it was first set on line {}",
                first.line
            )));
        }
        let value = value(name, rest.trim_start()).map_err(error)?;
        if value.contains('\0') {
            return Err(error(format!(
                "the value of {name} holds a NUL character, which no environment variable can"
            )));
        }
        entries.push(Entry {
            name: name.to_string(),
            value,
            line,
        });
    }
    Ok(entries)
}

/// The value written after `NAME=` (leading blanks already skipped).
fn value(name: &str, written: &str) -> Result<String, String> {
    let mut chars = written.chars();
    let (value, after) = match chars.next() {
        Some('\'') => {
            let body = chars.as_str();
            let end = body.find('\'').ok_or_else(|| {
                format!("the value of {name} opens a single quote that is not closed on this line")
            })?;
            (body[..end].to_string(), &body[end + 1..])
        }
        Some('"') => double_quoted(name, chars.as_str())?,
        _ => {
            // Unquoted: a `#` after a blank starts a comment.
            let end = written
                .char_indices()
                .find(|&(i, c)| c == '#' && written[..i].ends_with([' ', '\t']))
                .map_or(written.len(), |(i, _)| i);
            return Ok(written[..end].trim_end().to_string());
        }
    };
    let after = after.trim_start();
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!(
            "unexpected text after the closing quote of {name}'s value: expected the end of \
             the line or a # comment"
        ));
    }
    Ok(value)
}

/// A double-quoted value's text up to its closing quote, escapes applied, and what follows.
fn double_quoted<'a>(name: &str, body: &'a str) -> Result<(String, &'a str), String> {
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some('r') => value.push('\r'),
                Some(e @ ('"' | '\\' | '$')) => value.push(e),
                _ => {
                    return Err(format!(
                        "an unknown escape in the double-quoted value of {name}: expected \\n, \
                         \\t, \\r, \\\", \\\\ or \\$"
                    ));
                }
            },
            c => value.push(c),
        }
    }
    Err(format!(
        "the value of {name} opens a double quote that is not closed on this line"
    ))
}

/// Why the file at `path` should not be readable by others, when it is: its mode lets its
/// group or other users read or write it.
pub(crate) fn open_to_others(path: &Path) -> std::io::Result<Option<String>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "the env file {} is open to users other than its owner (mode {mode:04o}), and it \
             holds secrets; make it private with `chmod 600 {}`",
            path.display(),
            path.display()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect()
    }

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_string(), value.to_string())
    }

    #[test]
    fn reads_the_dotenv_forms() {
        let text = "\u{feff}# comment\n\nA=1\nexport B = two words  # note\r\n  C='it''s'\n\
                    D='lit # \\n $x'\nE=\"q\\\"\\n\\t\\\\\\$\" # c\nF=\nG=a#b\nexporter=x\n";
        // `C='it''s'` is a quote, then text after it: an error; check the rest without it.
        assert!(parse(text).is_err());
        let text = text.replace("  C='it''s'\n", "");
        assert_eq!(
            pairs(&text),
            [
                pair("A", "1"),
                pair("B", "two words"),
                pair("D", "lit # \\n $x"),
                pair("E", "q\"\n\t\\$"),
                pair("F", ""),
                pair("G", "a#b"),
                pair("exporter", "x"),
            ]
        );
    }

    fn error(text: &str) -> LineError {
        parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected_never_the_value() {
        let secret = "hunter2-secret";
        let cases = [
            (format!("A=1\n{secret}\n"), 2, "expected NAME=value"),
            (format!("1A={secret}\n"), 1, "not a variable name"),
            (format!("A=1\n\nA={secret}\n"), 3, "first set on line 1"),
            (
                format!("P=\"{secret}\n"),
                1,
                "double quote that is not closed",
            ),
            (
                format!("P='{secret}\n"),
                1,
                "single quote that is not closed",
            ),
            (format!("P=\"{secret}\\q\"\n"), 1, "unknown escape"),
            (
                format!("P='{secret}' trailing\n"),
                1,
                "after the closing quote",
            ),
            (format!("P=\"{secret}\\\"\n"), 1, "not closed"),
        ];
        for (text, line, expected) in cases {
            let e = error(&text);
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(expected), "{text:?}: {}", e.message);
            assert!(!e.message.contains(secret), "{text:?}: {}", e.message);
            assert!(!e.message.contains("hunter"), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn a_file_open_to_others_is_reported_and_a_private_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "A=1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = open_to_others(&path).unwrap().unwrap();
        assert!(warning.contains("0644"), "{warning}");
        assert!(warning.contains("chmod 600"), "{warning}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(open_to_others(&path).unwrap(), None);
    }
}
