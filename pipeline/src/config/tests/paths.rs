//! Paths resolved against the config file's folder, the state directory, and finding the
//! config file itself.

use super::*;

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let root = tempfile::tempdir().expect("temp dir");
    let app = root.path().join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    let text = "state_dir = \"../state/./x\"\n[services.hello]\nport = 1\ncontext = \"./app/../app\"\ndockerfile = \"./docker/../Dockerfile.prod\"\n";
    std::fs::write(root.path().join("shipit.toml"), text).expect("config written");

    // The config path is relative to cwd; everything in it is relative to its folder.
    let cwd = root.path().parent().expect("temp dir has a parent");
    let relative = Path::new(root.path().file_name().expect("name")).join("shipit.toml");
    let config = Config::load_with(&relative, &env(&[]), cwd).expect("config loads");

    assert_eq!(config.path, root.path().join("shipit.toml"));
    assert_eq!(config.dir, root.path());
    assert_eq!(config.state_dir, cwd.join("state/x"));
    assert_eq!(config.services["hello"].context, app);
    assert_eq!(
        config.services["hello"].dockerfile,
        PathBuf::from("Dockerfile.prod")
    );
}

#[test]
fn missing_build_context_is_reported_at_its_key() {
    let error = parse_err(&format!("{HELLO}context = \"no-such-folder\"\n"));
    assert_at(&error, "services.hello.context", "no-such-folder");
    assert_eq!(position(&error), (Some(3), Some(11)));
}

#[test]
fn dockerfile_outside_the_context_is_refused() {
    let error = parse_err(&format!("{HELLO}dockerfile = \"../Dockerfile\"\n"));
    assert_eq!(error.key.as_deref(), Some("services.hello.dockerfile"));
    assert_eq!(
        error.message,
        "dockerfile \"../Dockerfile\" is outside the build context"
    );
}

#[test]
fn state_dir_defaults_beside_the_config() {
    let config = parse(HELLO);
    assert_eq!(config.state_dir, manifest_dir().join(DEFAULT_STATE_DIR));
}

#[test]
fn state_dir_env_overrides_the_file_relative_to_cwd() {
    let text = format!("state_dir = \"from-file\"\n{HELLO}");
    let cwd = Path::new("/somewhere/else");
    let config = Config::parse(
        &text,
        &manifest_dir().join("shipit.toml"),
        &env(&[(STATE_DIR_ENV, "../from-env")]),
        cwd,
    )
    .expect("config loads");
    assert_eq!(config.state_dir, PathBuf::from("/somewhere/from-env"));

    let config = Config::parse(
        &text,
        &manifest_dir().join("shipit.toml"),
        &env(&[(STATE_DIR_ENV, "")]),
        cwd,
    )
    .expect("config loads");
    assert_eq!(
        config.state_dir,
        manifest_dir().join("from-file"),
        "empty is unset"
    );
}

// ---- loading the file ---------------------------------------------------------------------

#[test]
fn missing_default_file_hints_init_or_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = load_file(
        Path::new(DEFAULT_CONFIG_FILE),
        &env(&[]),
        dir.path(),
        Lookup::Default,
    )
    .expect_err("no file");
    assert_eq!(error.file, PathBuf::from("shipit.toml"));
    assert_eq!(
        error.message,
        format!("no shipit.toml in {}", dir.path().display())
    );
    assert_eq!(
        error.hint().as_deref(),
        Some("run `shipit init` to write one, or pass a config file with -c")
    );
}

#[test]
fn missing_given_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error =
        Config::load_with(Path::new("conf/prod.toml"), &env(&[]), dir.path()).expect_err("no file");
    assert_eq!(error.to_string(), "conf/prod.toml: config file not found");
    assert_eq!(
        error.hint().as_deref(),
        Some("check the path given with -c")
    );
}

#[test]
fn project_defaults_to_a_hash_of_the_state_dir_and_the_config_path() {
    let config = parse(HELLO);
    assert_eq!(
        config.project,
        derived_project(&config.state_dir, &config.path)
    );
    let other = parse(&format!("state_dir = \".other\"\n{HELLO}"));
    assert_ne!(other.project, config.project);
}

#[test]
fn project_key_is_taken_as_written() {
    let config = parse(&format!("project = \"shop-2\"\n{HELLO}"));
    assert_eq!(config.project, "shop-2");
}

#[test]
fn invalid_project_is_reported_at_its_key_with_a_hint() {
    let error = parse_err(&format!("project = \"Shop_2\"\n{HELLO}"));
    assert_at(&error, "project", "invalid project \"Shop_2\"");
    assert_eq!(position(&error), (Some(1), Some(11)));
    assert_hints(&error, "container names, image tags and labels");
}
