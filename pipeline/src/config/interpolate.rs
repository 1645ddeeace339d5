//! `${VAR}` interpolation of every string value in the config.
//!
//! It runs on the parsed `toml::Table`, before serde sees the values, so that every string
//! (paths, commands, addresses, env values) gets the same rules and an unset variable is
//! reported with the key it was used in:
//!
//! - `${VAR}` is the variable's value; an unset variable is an error (set but empty is fine).
//! - `${VAR:-default}` is the default when the variable is unset *or empty*.
//! - `$$` is a literal `$`.
//! - Any other `$` stays as it is, so `$HOME` in a shell command reaches the shell.

use toml::{Table, Value};

use super::Env;
use super::error::Problem;
use super::locate::KeyPath;

/// Interpolates every string in `table` (keys are left alone) in place.
pub(crate) fn table(table: &mut Table, env: &dyn Env, path: &KeyPath) -> Result<(), Problem> {
    for (key, value) in table.iter_mut() {
        self::value(value, env, &path.key(key))?;
    }
    Ok(())
}

fn value(value: &mut Value, env: &dyn Env, path: &KeyPath) -> Result<(), Problem> {
    match value {
        Value::String(text) => {
            *text = string(text, env).map_err(|e| e.into_problem(path.clone(), text))?;
        }
        Value::Array(values) => {
            for (i, element) in values.iter_mut().enumerate() {
                self::value(element, env, &path.index(i))?;
            }
        }
        Value::Table(inner) => table(inner, env, path)?,
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {}
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Error {
    Unset(String),
    Unterminated,
    BadName(String),
}

impl Error {
    fn into_problem(self, path: KeyPath, text: &str) -> Problem {
        match self {
            Error::Unset(name) => Problem::value(
                path,
                format!("environment variable `{name}` is not set (used in {text:?})"),
            )
            .with_hint(format!(
                "export {name}, or give it a default with ${{{name}:-default}}"
            )),
            Error::Unterminated => Problem::value(
                path,
                format!("unterminated `${{` in {text:?}: expected `}}` after the variable name"),
            )
            .with_hint("close it as ${VAR}, or write $$ for a literal $"),
            Error::BadName(inner) => Problem::value(
                path,
                format!(
                    "invalid variable reference `${{{inner}}}` in {text:?}: expected `${{NAME}}` \
                     or `${{NAME:-default}}` with NAME made of letters, digits and _"
                ),
            )
            .with_hint("write $$ for a literal $"),
        }
    }
}

fn string(text: &str, env: &dyn Env) -> Result<String, Error> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or(Error::Unterminated)?;
            out.push_str(&reference(&body[..close], env)?);
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of the inside of one `${...}`.
fn reference(inner: &str, env: &dyn Env) -> Result<String, Error> {
    let (name, default) = match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    };
    if !is_var_name(name) {
        return Err(Error::BadName(inner.to_string()));
    }
    match (env.var(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(Error::Unset(name.to_string())),
    }
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn set_variable_is_substituted() {
        let env = env(&[("A", "one"), ("B_2", "two")]);
        assert_eq!(string("x-${A}-${B_2}-y", &env), Ok("x-one-two-y".into()));
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        assert_eq!(
            string("${NOPE}", &env(&[])),
            Err(Error::Unset("NOPE".into()))
        );
    }

    #[test]
    fn set_but_empty_variable_is_empty_without_default() {
        assert_eq!(string("[${E}]", &env(&[("E", "")])), Ok("[]".into()));
    }

    #[test]
    fn default_is_used_when_unset_or_empty() {
        assert_eq!(string("${A:-x}", &env(&[])), Ok("x".into()));
        assert_eq!(string("${A:-x}", &env(&[("A", "")])), Ok("x".into()));
        assert_eq!(string("${A:-x}", &env(&[("A", "y")])), Ok("y".into()));
        assert_eq!(string("${A:-}", &env(&[])), Ok("".into()));
        assert_eq!(string("${A:-a:-b}", &env(&[])), Ok("a:-b".into()));
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let env = env(&[("A", "v")]);
        assert_eq!(string("$${A}", &env), Ok("${A}".into()));
        assert_eq!(string("a$$b$$$${A}", &env), Ok("a$b$${A}".into()));
        assert_eq!(string("$$$${A}", &env), Ok("$${A}".into()));
        assert_eq!(string("$$${A}", &env), Ok("$v".into()));
    }

    #[test]
    fn lone_dollar_stays_literal() {
        let env = env(&[("HOME", "/root")]);
        assert_eq!(
            string("echo $HOME $1 $", &env),
            Ok("echo $HOME $1 $".into())
        );
        assert_eq!(string("cost: 5$", &env), Ok("cost: 5$".into()));
    }

    #[test]
    fn unterminated_reference_is_an_error() {
        assert_eq!(string("a ${B", &env(&[])), Err(Error::Unterminated));
        assert_eq!(string("${", &env(&[])), Err(Error::Unterminated));
    }

    #[test]
    fn malformed_reference_is_an_error() {
        assert_eq!(string("${}", &env(&[])), Err(Error::BadName("".into())));
        assert_eq!(
            string("${A:x}", &env(&[("A", "1")])),
            Err(Error::BadName("A:x".into()))
        );
        assert_eq!(string("${1A}", &env(&[])), Err(Error::BadName("1A".into())));
    }

    #[test]
    fn every_string_in_nested_tables_and_arrays_is_interpolated() {
        let mut parsed: Table = toml::from_str(
            r#"
            top = "${A}"
            n = 1
            [t]
            list = ["${A}", "$$", { deep = "${A:-d}" }]
            "#,
        )
        .expect("valid toml");
        table(&mut parsed, &env(&[("A", "v")]), &KeyPath::root()).expect("all set");
        let expected: Table = toml::from_str(
            r#"
            top = "v"
            n = 1
            [t]
            list = ["v", "$", { deep = "v" }]
            "#,
        )
        .expect("valid toml");
        assert_eq!(parsed, expected);
    }

    #[test]
    fn error_carries_the_key_path_of_the_string() {
        let mut parsed: Table =
            toml::from_str("[t]\nlist = [\"ok\", \"${MISSING}\"]\n").expect("valid toml");
        let problem = table(&mut parsed, &env(&[]), &KeyPath::root()).expect_err("unset");
        assert_eq!(problem.path.to_string(), "t.list[1]");
        assert!(problem.message.contains("`MISSING`"), "{}", problem.message);
    }
}
