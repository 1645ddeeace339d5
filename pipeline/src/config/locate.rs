//! Key paths, and finding where a key path sits in the config's text.
//!
//! Interpolation, serde and validation work on parsed values that no longer know where they
//! came from, so they report a [`KeyPath`]. To turn that into line:column the original text is
//! parsed again with `toml_edit`, whose `Document` keeps the span of every key and value, and
//! walked along the path. A key that is not in the file (a missing required key, a default
//! that failed a check) is reported at its nearest parent that is.

use std::fmt;
use std::ops::Range;

use toml_edit::{Document, Item, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value sits in the config, such as `services.hello.health.interval`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path with `key` appended.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_string()));
        KeyPath(segments)
    }

    /// This path with an array index appended.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        KeyPath(segments)
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last key of the path, if it ends in a key.
    pub(crate) fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }

    /// The path `serde_path_to_error` recorded. Its unknown segments (`?`) are dropped: they
    /// only occur below a point the path could not follow, so the rest still locates.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let segments = path
            .iter()
            .filter_map(|segment| match segment {
                S::Seq { index } => Some(Segment::Index(*index)),
                S::Map { key } | S::Enum { variant: key } => Some(Segment::Key(key.clone())),
                S::Unknown => None,
            })
            .collect();
        KeyPath(segments)
    }
}

/// Dotted TOML spelling: keys that are not bare keys are quoted, as in the file.
impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Which part of a `key = value` pair an error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The key itself: an unknown key, a bad name.
    Key,
    /// The value: a wrong type, a bad duration.
    Value,
}

/// The byte span of `path` in `text`, or of its nearest parent present in the text. `None`
/// when not even the first key is in the text (a default), or the text does not parse.
pub(crate) fn span(text: &str, path: &KeyPath, anchor: Anchor) -> Option<Range<usize>> {
    let document = Document::parse(text).ok()?;
    let mut item: &Item = document.as_item();
    let mut found: Option<Range<usize>> = None;
    for (i, segment) in path.0.iter().enumerate() {
        let last = i + 1 == path.0.len();
        match segment {
            Segment::Key(name) => {
                let Some((key, child)) = item.as_table_like().and_then(|t| t.get_key_value(name))
                else {
                    return found;
                };
                let key_span = key.span();
                let child_span = child.span();
                found = match (last, anchor) {
                    (true, Anchor::Value) => child_span.or(key_span).or(found),
                    _ => key_span.or(child_span).or(found),
                };
                item = child;
            }
            Segment::Index(index) => {
                // The config schema has no arrays; an index only appears in an error about a
                // key that is itself wrong, so pointing at the element is enough.
                let element = match item {
                    Item::Value(Value::Array(array)) => array.get(*index).and_then(Value::span),
                    Item::ArrayOfTables(tables) => tables.get(*index).and_then(|t| t.span()),
                    _ => None,
                };
                return element.or(found);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        keys.iter().fold(KeyPath::root(), |p, k| p.key(k))
    }

    fn at(text: &str, span: Option<Range<usize>>) -> Option<&str> {
        span.map(|s| &text[s])
    }

    const TEXT: &str = r#"
[services.hello]
port = 8080
env = { A = "1" }

[services.hello.health]
interval = "fast"
"#;

    #[test]
    fn value_anchor_points_at_the_value_and_key_anchor_at_the_key() {
        let p = path(&["services", "hello", "health", "interval"]);
        assert_eq!(at(TEXT, span(TEXT, &p, Anchor::Value)), Some("\"fast\""));
        assert_eq!(at(TEXT, span(TEXT, &p, Anchor::Key)), Some("interval"));
    }

    #[test]
    fn inline_table_keys_are_found() {
        let p = path(&["services", "hello", "env", "A"]);
        assert_eq!(at(TEXT, span(TEXT, &p, Anchor::Key)), Some("A"));
    }

    #[test]
    fn missing_key_falls_back_to_nearest_parent() {
        let p = path(&["services", "hello", "health", "timeout"]);
        let span = span(TEXT, &p, Anchor::Value).expect("parent is in the text");
        assert_eq!(&TEXT[span.clone()], "health");
        assert!(TEXT[..span.start].ends_with("[services.hello."));
    }

    #[test]
    fn path_absent_from_the_text_has_no_span() {
        assert_eq!(span(TEXT, &path(&["targets", "local"]), Anchor::Key), None);
    }

    #[test]
    fn display_quotes_keys_that_are_not_bare() {
        let p = path(&["services", "a.b"]).key("x").index(2);
        assert_eq!(p.to_string(), r#"services."a.b".x[2]"#);
    }
}
