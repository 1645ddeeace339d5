//! Reading and rewriting each format: the version changes, every other byte stays.

use std::path::Path;

use super::*;

fn file(name: &str, text: &str) -> VersionFile {
    VersionFile::parse(Path::new(name), text.to_string())
        .unwrap_or_else(|e| panic!("{name} should parse: {e}"))
}

fn bad(name: &str, text: &str) -> String {
    bad_with_hint(name, text).0
}

/// The error's message and its hint.
fn bad_with_hint(name: &str, text: &str) -> (String, String) {
    match VersionFile::parse(Path::new(name), text.to_string()) {
        Ok(f) => panic!("{name} should not parse, got {}", f.version),
        Err(e) => (e.to_string(), e.hint().unwrap_or_default()),
    }
}

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

/// `after` equals `before` with exactly `old` replaced by `new` once.
fn only_changed(before: &str, after: &str, old: &str, new: &str) {
    let at = before.find(old).expect("old text is in the file");
    let expected = format!("{}{new}{}", &before[..at], &before[at + old.len()..]);
    assert_eq!(after, expected, "only {old:?} → {new:?} may change");
}

const CARGO: &str = r#"# The data-access layer.
[package]
name = "layered-sources"   # the crate name dependents use
version = "0.2.0"  # bumped by shipit
edition = "2024"

[dependencies]
serde = { version = "1", features = ["derive"] }   # keep this comment
"#;

#[test]
fn cargo_version_is_read_and_rewritten_keeping_comments() {
    let f = file("Cargo.toml", CARGO);
    assert_eq!(f.format, Format::Cargo);
    assert_eq!(f.version, v("0.2.0"));
    assert_eq!(f.package.as_deref(), Some("layered-sources"));
    let out = f.with_version(CARGO, &v("0.3.0")).unwrap();
    only_changed(CARGO, &out, "\"0.2.0\"", "\"0.3.0\"");
}

#[test]
fn cargo_workspace_package_version_is_used_without_a_package() {
    let text =
        "[workspace]\nmembers = [\"a\"]\n\n[workspace.package]\nversion = \"1.0.0\" # all crates\n";
    let f = file("Cargo.toml", text);
    assert_eq!(f.version, v("1.0.0"));
    let out = f.with_version(text, &v("1.1.0")).unwrap();
    only_changed(text, &out, "1.0.0", "1.1.0");
}

#[test]
fn cargo_inherited_or_missing_version_is_a_clear_error() {
    let inherited = bad(
        "Cargo.toml",
        "[package]\nname = \"a\"\nversion.workspace = true\n",
    );
    assert!(inherited.contains("Cargo.toml"), "{inherited}");
    assert!(
        inherited.contains("inherited from the workspace"),
        "{inherited}"
    );
    let missing = bad("Cargo.toml", "[package]\nname = \"a\"\n");
    assert!(missing.contains("no `version` string"), "{missing}");
    let (unparsable, hint) =
        bad_with_hint("Cargo.toml", "[package]\nname = \"a\"\nversion = \"0.2\"\n");
    assert!(
        unparsable.contains("Cargo.toml")
            && unparsable.contains("\"0.2\" is not a semantic version"),
        "{unparsable}"
    );
    assert!(hint.starts_with("write a version like 1.2.3"), "{hint}");
    let syntax = bad("Cargo.toml", "[package\n");
    assert!(syntax.contains("invalid TOML"), "{syntax}");
}

#[test]
fn cargo_dependency_references_keep_their_form_and_operator() {
    let text = r#"[package]
name = "core"
version = "1.0.0"

[dependencies]
layered-sources = { path = "../sources", version = "0.2.0" } # inline
protocols = "^0.1"
unrelated = "0.2.0"

[dev-dependencies.src]
package = "layered-sources"
path = "../sources"
version = "=0.2.0"

[target.'cfg(unix)'.build-dependencies]
layered-sources = "~0.2.0"
"#;
    let f = file("Cargo.toml", text);
    let out = f
        .with_dependency(text, "layered-sources", &v("0.3.0"))
        .unwrap()
        .expect("references updated");
    let expected = text
        .replace(
            r#"version = "0.2.0" } # inline"#,
            r#"version = "0.3.0" } # inline"#,
        )
        .replace(r#"version = "=0.2.0""#, r#"version = "=0.3.0""#)
        .replace(
            r#"layered-sources = "~0.2.0""#,
            r#"layered-sources = "~0.3.0""#,
        );
    assert_eq!(out, expected);

    // A path-only dependency has no version to update.
    let path_only = "[package]\nname = \"c\"\nversion = \"1.0.0\"\n[dependencies]\nlayered-sources = { path = \"../s\" }\n";
    let f = file("Cargo.toml", path_only);
    assert_eq!(
        f.with_dependency(path_only, "layered-sources", &v("0.3.0"))
            .unwrap(),
        None
    );
}

const PACKAGE_JSON: &str = "{\n  \"name\": \"@acme/protocols\",\n  \"version\":   \"1.4.2\",\n  \"private\": true,\n  \"dependencies\": {\n    \"@acme/sources\": \"^0.2.0\",\n    \"left-pad\": \"1.3.0\"\n  },\n  \"devDependencies\": { \"@acme/sources\": \"workspace:*\" }\n}\n";

#[test]
fn package_json_version_is_rewritten_byte_for_byte() {
    let f = file("package.json", PACKAGE_JSON);
    assert_eq!(f.format, Format::PackageJson);
    assert_eq!(f.version, v("1.4.2"));
    assert_eq!(f.package.as_deref(), Some("@acme/protocols"));
    let out = f.with_version(PACKAGE_JSON, &v("1.5.0")).unwrap();
    only_changed(PACKAGE_JSON, &out, "\"1.4.2\"", "\"1.5.0\"");
}

#[test]
fn package_json_dependencies_are_updated_but_workspace_specs_are_not() {
    let f = file("package.json", PACKAGE_JSON);
    let out = f
        .with_dependency(PACKAGE_JSON, "@acme/sources", &v("0.3.0"))
        .unwrap()
        .expect("one reference");
    only_changed(PACKAGE_JSON, &out, "\"^0.2.0\"", "\"^0.3.0\"");
    assert_eq!(
        f.with_dependency(PACKAGE_JSON, "nothing", &v("0.3.0"))
            .unwrap(),
        None
    );
}

#[test]
fn package_json_errors_name_the_file() {
    let e = bad("package.json", "{ \"name\": \"x\" }");
    assert!(
        e.contains("package.json") && e.contains("no top-level \"version\""),
        "{e}"
    );
    let e = bad("package.json", "{ \"version\": \"1.0\", }");
    assert!(e.contains("invalid JSON"), "{e}");
    let e = bad("package.json", "{ \"version\": \"next\" }");
    assert!(e.contains("\"next\" is not a semantic version"), "{e}");
}

const PROJECT_CLJ: &str = r#";; (defproject commented "9.9.9")
(defproject acme/core "1.0.0-SNAPSHOT"
  :description "Endpoints; \"quoted\" (defproject fake \"0.0.1\")"
  :dependencies [[org.clojure/clojure "1.11.1"]
                 [acme/sources "0.2.0"]])
"#;

#[test]
fn project_clj_only_the_defproject_version_changes() {
    let f = file("project.clj", PROJECT_CLJ);
    assert_eq!(f.format, Format::ProjectClj);
    assert_eq!(f.version, v("1.0.0-SNAPSHOT"));
    assert_eq!(f.package.as_deref(), Some("acme/core"));
    let out = f.with_version(PROJECT_CLJ, &v("1.0.0")).unwrap();
    only_changed(PROJECT_CLJ, &out, "1.0.0-SNAPSHOT", "1.0.0");
    // References in :dependencies are not edited in project.clj.
    assert_eq!(
        f.with_dependency(PROJECT_CLJ, "acme/sources", &v("0.3.0"))
            .unwrap(),
        None
    );
}

#[test]
fn project_clj_without_a_version_string_is_an_error() {
    let e = bad("project.clj", "(defproject acme/core :version-from-env)\n");
    assert!(e.contains("project.clj") && e.contains("defproject"), "{e}");
    let e = bad("project.clj", "(ns not-a-project)\n");
    assert!(e.contains("defproject"), "{e}");
}

const POM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- <version>9.9.9</version> in a comment -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <parent>
    <groupId>com.acme</groupId>
    <artifactId>parent</artifactId>
    <version>7.0.0</version>
  </parent>
  <artifactId>protocols</artifactId>
  <version> 0.4.1 </version>
  <dependencies>
    <dependency>
      <groupId>com.acme</groupId>
      <artifactId>sources</artifactId>
      <version>0.2.0</version>
    </dependency>
    <dependency>
      <groupId>com.acme</groupId>
      <artifactId>other</artifactId>
      <version>0.2.0</version>
    </dependency>
  </dependencies>
</project>
"#;

#[test]
fn pom_own_version_changes_not_the_parents_nor_comments() {
    let f = file("pom.xml", POM);
    assert_eq!(f.format, Format::Pom);
    assert_eq!(f.version, v("0.4.1"));
    assert_eq!(f.package.as_deref(), Some("com.acme:protocols"));
    let out = f.with_version(POM, &v("0.5.0")).unwrap();
    only_changed(
        POM,
        &out,
        "<version> 0.4.1 </version>",
        "<version> 0.5.0 </version>",
    );
}

#[test]
fn pom_dependency_on_the_bumped_module_is_updated() {
    let f = file("pom.xml", POM);
    let out = f
        .with_dependency(POM, "com.acme:sources", &v("0.3.0"))
        .unwrap()
        .expect("one reference");
    let at = POM.find("<artifactId>sources</artifactId>").unwrap();
    let (head, tail) = POM.split_at(at);
    let expected = format!(
        "{head}{}",
        tail.replacen("<version>0.2.0</version>", "<version>0.3.0</version>", 1)
    );
    assert_eq!(out, expected);
}

#[test]
fn pom_inherited_or_property_version_is_an_error() {
    let inherited = POM.replace("  <version> 0.4.1 </version>\n", "");
    let e = bad("pom.xml", &inherited);
    assert!(
        e.contains("pom.xml") && e.contains("no <version> of its own"),
        "{e}"
    );
    let property = POM.replace(" 0.4.1 ", "${revision}");
    let e = bad("pom.xml", &property);
    assert!(
        e.contains("\"${revision}\" is not a semantic version"),
        "{e}"
    );
    let e = bad("pom.xml", "<project><version>1.0.0</version></wrong>");
    assert!(e.contains("invalid XML"), "{e}");
}

#[test]
fn plain_version_file_keeps_its_whitespace() {
    let f = file("VERSION", "0.1.0\n");
    assert_eq!(f.format, Format::Plain);
    assert_eq!(f.version, v("0.1.0"));
    assert_eq!(f.package, None);
    assert_eq!(f.with_version("0.1.0\n", &v("0.2.0")).unwrap(), "0.2.0\n");
    let e = bad("VERSION", "one point oh\n");
    assert!(
        e.contains("VERSION") && e.contains("not a semantic version"),
        "{e}"
    );
    assert_eq!(file("version.txt", "  2.0.0").format, Format::Plain);
}

#[test]
fn requirements_keep_their_operator_and_ranges_are_left_alone() {
    let new = v("0.3.0");
    assert_eq!(requirement("0.2.0", &new).as_deref(), Some("0.3.0"));
    assert_eq!(requirement("^0.2", &new).as_deref(), Some("^0.3.0"));
    assert_eq!(requirement("~0.2.1", &new).as_deref(), Some("~0.3.0"));
    assert_eq!(requirement("=0.2.0", &new).as_deref(), Some("=0.3.0"));
    assert_eq!(requirement(">=0.2.0", &new).as_deref(), Some(">=0.3.0"));
    assert_eq!(requirement(">=0.2, <0.4", &new), None);
    assert_eq!(requirement("0.2.x", &new), None);
    assert_eq!(requirement("*", &new), None);
    assert_eq!(requirement("<1.0.0", &new), None);
    assert_eq!(requirement("workspace:*", &new), None);
    assert_eq!(requirement("file:../sources", &new), None);
}

#[test]
fn missing_file_names_the_module_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("VERSION");
    let e = VersionFile::read("sources", &path).unwrap_err();
    assert!(matches!(e, VersionError::MissingFile { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("sources") && text.contains(&path.display().to_string()),
        "{text}"
    );
}
