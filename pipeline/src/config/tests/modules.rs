//! `[modules.<name>]`: version files, paths, dependencies and tag formats.

use super::*;

/// A folder with module folders `names`, each holding a `VERSION` file.
fn module_folders(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    for name in names {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("VERSION"), "0.1.0\n").unwrap();
    }
    dir
}

const LAYERS: &str = r#"[modules.sources]
path = "sources"

[modules.protocols]
path = "protocols"
depends_on = ["sources"]

[modules.core]
path = "core"
depends_on = ["protocols", "sources"]
"#;

#[test]
fn modules_only_config_loads_with_defaults() {
    let dir = module_folders(&["sources", "protocols", "core"]);
    let config = parse_in(dir.path(), LAYERS).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.services.is_empty(), "a library-only config is valid");
    let core = &config.modules["core"];
    assert_eq!(core.path, dir.path().join("core"));
    assert_eq!(core.version_file, dir.path().join("core/VERSION"));
    assert_eq!(core.depends_on, ["protocols", "sources"]);
    assert_eq!(core.tag, DEFAULT_MODULE_TAG);
}

#[test]
fn version_file_is_detected_in_the_documented_order() {
    let dir = module_folders(&["lib"]);
    std::fs::write(dir.path().join("lib/package.json"), "{}").unwrap();
    let config = parse_in(dir.path(), "[modules.lib]\npath = \"lib\"\n").unwrap();
    assert_eq!(
        config.modules["lib"].version_file,
        dir.path().join("lib/package.json"),
        "package.json comes before VERSION"
    );
    std::fs::write(dir.path().join("lib/Cargo.toml"), "").unwrap();
    let config = parse_in(dir.path(), "[modules.lib]\npath = \"lib\"\n").unwrap();
    assert_eq!(
        config.modules["lib"].version_file,
        dir.path().join("lib/Cargo.toml")
    );
    let config = parse_in(
        dir.path(),
        "[modules.lib]\npath = \"lib\"\nversion_file = \"VERSION\"\n",
    )
    .unwrap();
    assert_eq!(
        config.modules["lib"].version_file,
        dir.path().join("lib/VERSION")
    );
}

#[test]
fn module_without_a_version_file_lists_what_was_looked_for() {
    let dir = module_folders(&[]);
    std::fs::create_dir(dir.path().join("lib")).unwrap();
    let error = parse_in(dir.path(), "[modules.lib]\npath = \"lib\"\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.lib"));
    assert_eq!(position(&error), (Some(1), Some(10)));
    assert!(
        error
            .message
            .contains("looked for Cargo.toml, package.json, project.clj, pom.xml, VERSION"),
        "{}",
        error.message
    );

    let error = parse_in(
        dir.path(),
        "[modules.lib]\npath = \"lib\"\nversion_file = \"version.txt\"\n",
    )
    .unwrap_err();
    assert_at(&error, "modules.lib.version_file", "version.txt");
    assert_eq!(position(&error), (Some(3), Some(16)));

    let error = parse_in(
        dir.path(),
        "[modules.lib]\npath = \"lib\"\nversion_file = \"../VERSION\"\n",
    )
    .unwrap_err();
    assert!(error.message.contains("outside the module's folder"));
}

#[test]
fn module_path_is_required_and_must_exist() {
    let dir = module_folders(&[]);
    let error = parse_in(dir.path(), "[modules.lib]\ntag = \"v<version>\"\n").unwrap_err();
    assert_eq!(error.message, "missing required key `path`");
    assert_hints(&error, "path = ");

    let error = parse_in(dir.path(), "[modules.lib]\npath = \"nope\"\n").unwrap_err();
    assert_at(&error, "modules.lib.path", "does not exist");
    assert_eq!(position(&error), (Some(2), Some(8)));
}

#[test]
fn depends_on_must_name_modules() {
    let dir = module_folders(&["a", "b"]);
    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ndepends_on = [\"b\", \"c\"]\n[modules.b]\npath = \"b\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.a.depends_on[1]"));
    assert_eq!(position(&error), (Some(3), Some(20)));
    assert_eq!(error.message, "no module named `c`; expected one of: `b`");
}

#[test]
fn overlapping_module_paths_are_refused() {
    let dir = module_folders(&["lib", "lib/inner"]);
    let error = parse_in(
        dir.path(),
        "[modules.outer]\npath = \"lib\"\n[modules.inner]\npath = \"lib/inner\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.outer.path"));
    assert!(
        error.message.contains("overlaps") && error.message.contains("module `inner`"),
        "{}",
        error.message
    );

    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"lib\"\n[modules.b]\npath = \"./lib/\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.b.path"));

    // Folders that only share a name prefix do not overlap.
    let dir = module_folders(&["lib", "lib-extra"]);
    assert!(
        parse_in(
            dir.path(),
            "[modules.a]\npath = \"lib\"\n[modules.b]\npath = \"lib-extra\"\n"
        )
        .is_ok()
    );
}

#[test]
fn dependency_cycle_is_an_error_naming_the_cycle() {
    let dir = module_folders(&["a", "b", "c"]);
    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ndepends_on = [\"b\"]\n\
         [modules.b]\npath = \"b\"\ndepends_on = [\"c\"]\n\
         [modules.c]\npath = \"c\"\ndepends_on = [\"a\"]\n",
    )
    .unwrap_err();
    assert_eq!(error.message, "dependency cycle: a → b → c → a");
    assert_eq!(error.key.as_deref(), Some("modules.a.depends_on"));
    assert_eq!(position(&error), (Some(3), Some(14)));

    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ndepends_on = [\"a\"]\n",
    )
    .unwrap_err();
    assert_eq!(error.message, "dependency cycle: a → a");
}

#[test]
fn tag_format_needs_the_version_placeholder() {
    let dir = module_folders(&["a"]);
    let error = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ntag = \"<name>-latest\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.a.tag"));
    assert_eq!(
        error.message,
        "invalid tag format \"<name>-latest\": expected `<version>` in it"
    );
    assert_eq!(
        error.hint().as_deref(),
        Some("the default is \"<name>-v<version>\"")
    );
    let config = parse_in(
        dir.path(),
        "[modules.a]\npath = \"a\"\ntag = \"v<version>\"\n",
    )
    .unwrap();
    assert_eq!(config.modules["a"].tag, "v<version>");
}

#[test]
fn module_names_follow_the_service_name_rules() {
    let dir = module_folders(&["a"]);
    let error = parse_in(dir.path(), "[modules.Sources]\npath = \"a\"\n").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("modules.Sources"));
    assert!(error.message.starts_with("invalid module name \"Sources\""));
}

#[test]
fn versioning_pushes_to_origin_only_when_asked() {
    let config = parse("[modules.core]\npath = \".\"\n");
    assert_eq!(config.versioning, crate::config::Versioning::default());
    assert!(!config.versioning.push);
    assert_eq!(config.versioning.remote, "origin");
    let config = parse("[versioning]\npush = true\nremote = \"upstream\"\n");
    assert!(config.versioning.push);
    assert_eq!(config.versioning.remote, "upstream");
    let error = parse_err("[versioning]\nremote = \"--mirror\"\n");
    assert_eq!(error.key.as_deref(), Some("versioning.remote"));
    let error = parse_err("[versioning]\npush = \"yes\"\n");
    assert_eq!(error.key.as_deref(), Some("versioning.push"));
    let error = parse_err("[versioning]\npushh = true\n");
    assert!(error.to_string().contains("pushh"), "{error}");
}
