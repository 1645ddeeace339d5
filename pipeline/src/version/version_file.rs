//! The file that holds a module's version, in five formats: `Cargo.toml`, `package.json`,
//! `project.clj`, `pom.xml` and a plain `VERSION` file (any other file name is read as plain
//! text too).
//!
//! Rewriting changes the version and nothing else: every other byte, comments and layout
//! included, stays as it was. TOML is edited through `toml_edit`, which keeps the document's
//! formatting. The other formats are edited by replacing the one span of text that holds the
//! version, found with a parser that reports positions (`jsonc-parser` for JSON, `quick-xml`
//! for the POM, a small reader for `defproject`).
//!
//! A dependent's reference to a bumped module is updated where the format has a structured
//! place for it: `[dependencies]` (and `dev-`, `build-`, `target.*.`) entries in Cargo.toml,
//! the `dependencies` objects of package.json, and `<dependency>` elements of a POM. A
//! requirement keeps its operator (`^0.2.0` becomes `^0.3.0`); ranges, wildcards, property
//! references (`${x}`) and non-registry specs (`workspace:*`, `file:..`) are left alone.
//! project.clj and VERSION files are never edited beyond their own version.

use std::ops::Range;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use super::VersionError;

/// The format of a version file, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `Cargo.toml`: `package.version` (or `workspace.package.version`).
    Cargo,
    /// `package.json`: the top-level `version`.
    PackageJson,
    /// `project.clj`: the version string of `(defproject name "version" ...)`.
    ProjectClj,
    /// `pom.xml`: the project's own `<version>`.
    Pom,
    /// Any other file: its whole content, trimmed, is the version.
    Plain,
}

impl Format {
    pub fn of(path: &Path) -> Format {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("Cargo.toml") => Format::Cargo,
            Some("package.json") => Format::PackageJson,
            Some("project.clj") => Format::ProjectClj,
            Some("pom.xml") => Format::Pom,
            _ => Format::Plain,
        }
    }

    /// Where the version goes in this format, for hints.
    fn place(self) -> &'static str {
        match self {
            Format::Cargo => "`version = \"1.2.3\"` under [package]",
            Format::PackageJson => "`\"version\": \"1.2.3\"` at the top level",
            Format::ProjectClj => "`(defproject group/name \"1.2.3\" ...)`",
            Format::Pom => "`<version>1.2.3</version>` directly under <project>",
            Format::Plain => "the file, alone on its line: `1.2.3`",
        }
    }
}

/// A version file as read.
#[derive(Debug, Clone)]
pub struct VersionFile {
    pub path: PathBuf,
    pub format: Format,
    pub text: String,
    pub version: Version,
    /// The name dependents use for the module: the crate or npm package name, the
    /// `group/name` of a defproject, `groupId:artifactId` of a POM. `None` for plain files.
    pub package: Option<String>,
}

/// What is wrong in a file, before the file's name is attached.
struct Problem {
    problem: String,
    hint: String,
}

impl Problem {
    fn new(problem: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    fn in_file(self, path: &Path) -> VersionError {
        VersionError::BadVersionFile {
            file: path.to_path_buf(),
            problem: self.problem,
            hint: self.hint,
        }
    }
}

impl VersionFile {
    /// Reads module `module`'s version file at `path`.
    pub fn read(module: &str, path: &Path) -> Result<VersionFile, VersionError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => VersionError::MissingFile {
                module: module.to_string(),
                file: path.to_path_buf(),
            },
            _ => VersionError::Unreadable {
                file: path.to_path_buf(),
                source,
            },
        })?;
        VersionFile::parse(path, text)
    }

    /// Reads the version out of `text`, the content of the file at `path`.
    pub fn parse(path: &Path, text: String) -> Result<VersionFile, VersionError> {
        let format = Format::of(path);
        let (found, package) = match format {
            Format::Cargo => cargo::read(&text),
            Format::PackageJson => json::own(&text).map(|(_, v, name)| (v, name)),
            Format::ProjectClj => clj::defproject(&text).map(|(_, v, name)| (v, Some(name))),
            Format::Pom => pom::scan(&text).and_then(|scan| {
                let package = scan.package();
                let (_, version) = scan.own_version.ok_or_else(|| {
                    Problem::new(
                        "the POM has no <version> of its own under <project> (one inherited \
                         from <parent> cannot be bumped here)",
                        format!("add {}", format.place()),
                    )
                })?;
                Ok((version, package))
            }),
            Format::Plain => Ok((plain::span(&text).1, None)),
        }
        .map_err(|p| p.in_file(path))?;
        let version = parse_version(&found, format).map_err(|p| p.in_file(path))?;
        Ok(VersionFile {
            path: path.to_path_buf(),
            format,
            text,
            version,
            package,
        })
    }

    /// `text` (this file's content, possibly already edited) with its own version set to
    /// `version`, every other byte unchanged.
    pub fn with_version(&self, text: &str, version: &Version) -> Result<String, VersionError> {
        let new = version.to_string();
        let result = match self.format {
            Format::Cargo => cargo::set_version(text, &new),
            Format::PackageJson => {
                json::own(text).map(|(span, _, _)| splice(text, vec![(span, json::quote(&new))]))
            }
            Format::ProjectClj => {
                clj::defproject(text).map(|(span, _, _)| splice(text, vec![(span, new)]))
            }
            Format::Pom => pom::scan(text).and_then(|scan| {
                let (span, _) = scan
                    .own_version
                    .ok_or_else(|| Problem::new("the POM has no <version> under <project>", ""))?;
                Ok(splice(text, vec![(span, new)]))
            }),
            Format::Plain => Ok(splice(text, vec![(plain::span(text).0, new)])),
        };
        result.map_err(|p| p.in_file(&self.path))
    }

    /// `text` with its references to `package` set to require `version`, or `None` when it
    /// has none this format lets shipit update.
    pub fn with_dependency(
        &self,
        text: &str,
        package: &str,
        version: &Version,
    ) -> Result<Option<String>, VersionError> {
        let edits = match self.format {
            Format::Cargo => {
                return cargo::set_dependency(text, package, version)
                    .map_err(|p| p.in_file(&self.path));
            }
            Format::PackageJson => json::dependencies(text, package, version),
            Format::Pom => pom::scan(text).map(|scan| scan.dependency_edits(package, version)),
            Format::ProjectClj | Format::Plain => Ok(Vec::new()),
        }
        .map_err(|p| p.in_file(&self.path))?;
        if edits.is_empty() {
            return Ok(None);
        }
        Ok(Some(splice(text, edits)))
    }
}

fn parse_version(found: &str, format: Format) -> Result<Version, Problem> {
    Version::parse(found.trim()).map_err(|e| {
        Problem::new(
            format!("{found:?} is not a semantic version ({e})"),
            format!(
                "write a version like 1.2.3 (major.minor.patch) as {}",
                format.place()
            ),
        )
    })
}

/// A dependency requirement moved to `new`, keeping its operator: `0.2.0` → `0.3.0`,
/// `^0.2` → `^0.3.0`, `=1.0.0` → `=1.1.0`. `None` for what is not a single caret, tilde,
/// exact or lower-bound requirement (ranges, wildcards, `<`, tags, paths).
pub fn requirement(old: &str, new: &Version) -> Option<String> {
    let trimmed = old.trim();
    let operator_len = trimmed
        .find(|c: char| !matches!(c, '^' | '~' | '=' | '>' | '<' | ' '))
        .unwrap_or(trimmed.len());
    let (operator, rest) = trimmed.split_at(operator_len);
    if !matches!(operator.trim(), "" | "^" | "~" | "=" | ">=" | "v") {
        return None;
    }
    let simple = rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        && !rest.contains(['x', 'X']);
    simple.then(|| format!("{operator}{new}"))
}

/// `text` with each span replaced; spans do not overlap.
fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    let mut out = text.to_string();
    for (span, replacement) in edits {
        out.replace_range(span, &replacement);
    }
    out
}

mod cargo {
    use toml_edit::{DocumentMut, Item, Table, Value};

    use super::{Format, Problem, Version, requirement};

    const DEPENDENCY_TABLES: [&str; 3] = ["dependencies", "dev-dependencies", "build-dependencies"];

    fn document(text: &str) -> Result<DocumentMut, Problem> {
        text.parse::<DocumentMut>().map_err(|e| {
            Problem::new(
                format!("invalid TOML: {}", e.message().trim()),
                "fix the file so that `cargo metadata` reads it",
            )
        })
    }

    /// The table holding the version: `[package]`, or `[workspace.package]` in a
    /// workspace's root manifest.
    fn version_table(document: &DocumentMut) -> Option<&'static [&'static str]> {
        if document.get("package").is_some() {
            Some(&["package"])
        } else if document
            .get("workspace")
            .and_then(|w| w.get("package"))
            .is_some()
        {
            Some(&["workspace", "package"])
        } else {
            None
        }
    }

    pub(super) fn read(text: &str) -> Result<(String, Option<String>), Problem> {
        let document = document(text)?;
        let Some(path) = version_table(&document) else {
            return Err(Problem::new(
                "no [package] table",
                format!("add {}", Format::Cargo.place()),
            ));
        };
        let table = path
            .iter()
            .try_fold(document.as_item(), |item, key| item.get(key))
            .ok_or_else(|| Problem::new("no [package] table", ""))?;
        let version = table.get("version");
        if version.and_then(|v| v.get("workspace")).is_some() {
            return Err(Problem::new(
                "the version is inherited from the workspace (`version.workspace = true`)",
                "set the module's version_file to the workspace's Cargo.toml, whose \
                 [workspace.package] holds the version",
            ));
        }
        let Some(version) = version.and_then(Item::as_str) else {
            return Err(Problem::new(
                format!("no `version` string in [{}]", path.join(".")),
                format!("add {}", Format::Cargo.place()),
            ));
        };
        let name = table.get("name").and_then(Item::as_str).map(str::to_string);
        Ok((version.to_string(), name))
    }

    pub(super) fn set_version(text: &str, new: &str) -> Result<String, Problem> {
        let mut document = document(text)?;
        let path = version_table(&document).unwrap_or(&["package"]);
        let mut item = Some(document.as_item_mut());
        for key in path {
            item = item.and_then(|i| i.get_mut(key));
        }
        match item
            .and_then(|i| i.get_mut("version"))
            .and_then(Item::as_value_mut)
        {
            Some(value) if value.is_str() => set_string(value, new),
            _ => return Err(Problem::new("no `version` string to set", "")),
        }
        Ok(document.to_string())
    }

    /// Replaces a string value, keeping the whitespace and comments around it.
    fn set_string(value: &mut Value, new: &str) {
        let decor = value.decor().clone();
        *value = Value::from(new);
        *value.decor_mut() = decor;
    }

    pub(super) fn set_dependency(
        text: &str,
        package: &str,
        version: &Version,
    ) -> Result<Option<String>, Problem> {
        let mut document = document(text)?;
        let mut changed = false;
        for name in DEPENDENCY_TABLES {
            if let Some(table) = document.get_mut(name).and_then(Item::as_table_like_mut) {
                changed |= update_table(table, package, version);
            }
        }
        if let Some(targets) = document.get_mut("target").and_then(Item::as_table_mut) {
            for (_, target) in targets.iter_mut() {
                for name in DEPENDENCY_TABLES {
                    if let Some(table) = target.get_mut(name).and_then(Item::as_table_like_mut) {
                        changed |= update_table(table, package, version);
                    }
                }
            }
        }
        Ok(changed.then(|| document.to_string()))
    }

    fn update_table(
        table: &mut dyn toml_edit::TableLike,
        package: &str,
        version: &Version,
    ) -> bool {
        let mut changed = false;
        for (key, item) in table.iter_mut() {
            let renamed = item.get("package").and_then(Item::as_str);
            if renamed.unwrap_or(key.get()) != package {
                continue;
            }
            let value = match item {
                // `sources = "0.2.0"`
                Item::Value(value) if value.is_str() => Some(value),
                // `sources = { path = "..", version = "0.2.0" }`
                Item::Value(Value::InlineTable(inline)) => inline.get_mut("version"),
                // `[dependencies.sources]` with `version = "0.2.0"`
                Item::Table(table) => Table::get_mut(table, "version").and_then(Item::as_value_mut),
                _ => None,
            };
            let Some(value) = value else { continue };
            let Some(new) = value.as_str().and_then(|old| requirement(old, version)) else {
                continue;
            };
            if value.as_str() != Some(new.as_str()) {
                set_string(value, &new);
                changed = true;
            }
        }
        changed
    }
}

mod json {
    use std::ops::Range;

    use jsonc_parser::ast::{Object, Value};
    use jsonc_parser::{CollectOptions, ParseOptions, parse_to_ast};

    use super::{Format, Problem, Version, requirement};

    const DEPENDENCY_OBJECTS: [&str; 4] = [
        "dependencies",
        "devDependencies",
        "peerDependencies",
        "optionalDependencies",
    ];

    fn strict() -> ParseOptions {
        ParseOptions {
            allow_comments: false,
            allow_loose_object_property_names: false,
            allow_trailing_commas: false,
            allow_missing_commas: false,
            allow_single_quoted_strings: false,
            allow_hexadecimal_numbers: false,
            allow_unary_plus_numbers: false,
            allow_bare_decimal_point_numbers: false,
            allow_non_finite_numbers: false,
            allow_extended_string_escapes: false,
        }
    }

    fn with_root<T>(
        text: &str,
        read: impl FnOnce(&Object<'_>) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        let parsed = parse_to_ast(text, &CollectOptions::default(), &strict()).map_err(|e| {
            Problem::new(
                format!("invalid JSON: {e}"),
                "fix the file so that npm reads it",
            )
        })?;
        match parsed.value {
            Some(Value::Object(root)) => read(&root),
            _ => Err(Problem::new(
                "the file is not a JSON object",
                format!("add {}", Format::PackageJson.place()),
            )),
        }
    }

    /// The span of the `version` string (quotes included), its value, and the `name`.
    pub(super) fn own(text: &str) -> Result<(Range<usize>, String, Option<String>), Problem> {
        with_root(text, |root| {
            let version = root.get_string("version").ok_or_else(|| {
                Problem::new(
                    "no top-level \"version\" string",
                    format!("add {}", Format::PackageJson.place()),
                )
            })?;
            let name = root.get_string("name").map(|n| n.value.to_string());
            Ok((
                version.range.start..version.range.end,
                version.value.to_string(),
                name,
            ))
        })
    }

    pub(super) fn dependencies(
        text: &str,
        package: &str,
        version: &Version,
    ) -> Result<Vec<(Range<usize>, String)>, Problem> {
        with_root(text, |root| {
            let mut edits = Vec::new();
            for name in DEPENDENCY_OBJECTS {
                let Some(object) = root.get_object(name) else {
                    continue;
                };
                let Some(spec) = object.get_string(package) else {
                    continue;
                };
                if let Some(new) = requirement(&spec.value, version)
                    && new != spec.value
                {
                    edits.push((spec.range.start..spec.range.end, quote(&new)));
                }
            }
            Ok(edits)
        })
    }

    pub(super) fn quote(text: &str) -> String {
        serde_json::to_string(text).expect("a string serializes")
    }
}

mod clj {
    use std::ops::Range;

    use super::{Format, Problem};

    /// The span of the version inside its quotes in `(defproject name "version" ...)`, the
    /// version, and the project's name. Comments (`;`) and strings before it are skipped.
    pub(super) fn defproject(text: &str) -> Result<(Range<usize>, String, String), Problem> {
        let missing = || {
            Problem::new(
                "no `(defproject name \"version\" ...)` form with a version string",
                format!("write the version as {}", Format::ProjectClj.place()),
            )
        };
        let bytes = text.as_bytes();
        let mut i = 0;
        let start = loop {
            match bytes.get(i) {
                None => return Err(missing()),
                Some(b';') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                Some(b'"') => i = string_end(bytes, i).ok_or_else(missing)?,
                Some(b'(') if text[i + 1..].starts_with("defproject") => {
                    let after = i + 1 + "defproject".len();
                    if bytes.get(after).is_some_and(|b| is_space(*b)) {
                        break after;
                    }
                    i += 1;
                }
                Some(_) => i += 1,
            }
        };
        let name_start = skip_space(bytes, start);
        let mut name_end = name_start;
        while name_end < bytes.len() && !is_space(bytes[name_end]) && bytes[name_end] != b')' {
            name_end += 1;
        }
        let version_start = skip_space(bytes, name_end);
        if name_end == name_start || bytes.get(version_start) != Some(&b'"') {
            return Err(missing());
        }
        let end = string_end(bytes, version_start).ok_or_else(missing)?;
        let span = version_start + 1..end - 1;
        Ok((
            span.clone(),
            text[span].to_string(),
            text[name_start..name_end].to_string(),
        ))
    }

    /// Whitespace and commas separate forms in Clojure.
    fn is_space(b: u8) -> bool {
        b.is_ascii_whitespace() || b == b','
    }

    fn skip_space(bytes: &[u8], mut i: usize) -> usize {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        i
    }

    /// The index just past the closing quote of the string opening at `open`.
    fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
        let mut i = open + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }
}

mod pom {
    use std::ops::Range;

    use quick_xml::Reader;
    use quick_xml::events::Event;

    use super::{Problem, Version, requirement};

    /// A `<dependency>` of the POM, with the span of its `<version>` text.
    #[derive(Debug, Default)]
    struct Dependency {
        group: Option<String>,
        artifact: Option<String>,
        version: Option<(Range<usize>, String)>,
    }

    /// What shipit reads from a POM: its coordinates, its own version's span, and its
    /// dependencies (also those under `<dependencyManagement>`).
    #[derive(Debug, Default)]
    pub(super) struct Scan {
        pub(super) own_version: Option<(Range<usize>, String)>,
        group: Option<String>,
        parent_group: Option<String>,
        artifact: Option<String>,
        dependencies: Vec<Dependency>,
    }

    impl Scan {
        /// `groupId:artifactId`, with the parent's groupId when the POM has none.
        pub(super) fn package(&self) -> Option<String> {
            let group = self.group.as_ref().or(self.parent_group.as_ref())?;
            Some(format!("{group}:{}", self.artifact.as_ref()?))
        }

        pub(super) fn dependency_edits(
            &self,
            package: &str,
            version: &Version,
        ) -> Vec<(Range<usize>, String)> {
            self.dependencies
                .iter()
                .filter(|d| {
                    let coordinates = format!(
                        "{}:{}",
                        d.group.as_deref().unwrap_or(""),
                        d.artifact.as_deref().unwrap_or("")
                    );
                    coordinates == package
                })
                .filter_map(|d| {
                    let (span, old) = d.version.as_ref()?;
                    let new = requirement(old, version)?;
                    (new != *old).then(|| (span.clone(), new))
                })
                .collect()
        }
    }

    fn is_dependency(path: &[String]) -> bool {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        matches!(
            path.as_slice(),
            ["project", "dependencies", "dependency"]
                | [
                    "project",
                    "dependencyManagement",
                    "dependencies",
                    "dependency"
                ]
        )
    }

    pub(super) fn scan(text: &str) -> Result<Scan, Problem> {
        let invalid = |at: u64, e: &dyn std::fmt::Display| {
            Problem::new(
                format!("invalid XML at byte {at}: {e}"),
                "fix the file so that Maven reads it",
            )
        };
        let mut reader = Reader::from_str(text);
        let mut path: Vec<String> = Vec::new();
        let mut scan = Scan::default();
        let mut dependency: Option<Dependency> = None;
        loop {
            let before = reader.buffer_position();
            let event = reader
                .read_event()
                .map_err(|e| invalid(reader.error_position(), &e))?;
            let after = reader.buffer_position();
            match event {
                Event::Start(start) => {
                    let name = start.local_name().into_inner().to_string();
                    path.push(name);
                    if is_dependency(&path) {
                        dependency = Some(Dependency::default());
                    }
                }
                Event::End(_) => {
                    if is_dependency(&path)
                        && let Some(done) = dependency.take()
                    {
                        scan.dependencies.push(done);
                    }
                    path.pop();
                }
                Event::Text(_) => {
                    let (Ok(start), Ok(end)) = (usize::try_from(before), usize::try_from(after))
                    else {
                        continue;
                    };
                    let raw = &text[start..end];
                    let trimmed_start = start + (raw.len() - raw.trim_start().len());
                    let span = trimmed_start..trimmed_start + raw.trim().len();
                    let value = text[span.clone()].to_string();
                    let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                    match keys.as_slice() {
                        ["project", "version"] => scan.own_version = Some((span, value)),
                        ["project", "groupId"] => scan.group = Some(value),
                        ["project", "artifactId"] => scan.artifact = Some(value),
                        ["project", "parent", "groupId"] => scan.parent_group = Some(value),
                        [.., "dependency", field] => {
                            if let Some(d) = dependency.as_mut() {
                                match *field {
                                    "groupId" => d.group = Some(value),
                                    "artifactId" => d.artifact = Some(value),
                                    "version" => d.version = Some((span, value)),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(scan)
    }
}

mod plain {
    use std::ops::Range;

    /// The span of the trimmed content, and that content.
    pub(super) fn span(text: &str) -> (Range<usize>, String) {
        let start = text.len() - text.trim_start().len();
        let span = start..start + text.trim().len();
        (span.clone(), text[span].to_string())
    }
}

#[cfg(test)]
mod tests;
