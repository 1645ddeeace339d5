//! Test repositories: a real git repository in a temporary folder, with a fixed identity and
//! signing off, and a shipit config loaded from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Config;

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
}

impl Fixture {
    /// An empty repository on branch `main`.
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().canonicalize().expect("temp dir resolves");
        let fixture = Fixture { _dir: dir, root };
        fixture.git(&["init", "--quiet", "--initial-branch=main"]);
        for (key, value) in [
            ("user.name", "shipit test"),
            ("user.email", "test@shipit.invalid"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
            ("core.autocrlf", "false"),
        ] {
            fixture.git(&["config", key, value]);
        }
        fixture
    }

    /// Runs git in the repository and returns its stdout; panics when git fails.
    pub(crate) fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(args)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub(crate) fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("folders are made");
        std::fs::write(path, text).expect("file is written");
    }

    pub(crate) fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative))
            .unwrap_or_else(|e| panic!("{relative} is readable: {e}"))
    }

    /// Stages everything and commits it; returns the commit id.
    pub(crate) fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Writes `relative` and commits it with `message`.
    pub(crate) fn change(&self, relative: &str, text: &str, message: &str) -> String {
        self.write(relative, text);
        self.commit(message)
    }

    pub(crate) fn tag(&self, name: &str) {
        self.git(&["tag", "--annotate", "--message", name, name]);
    }

    pub(crate) fn tags(&self) -> Vec<String> {
        self.git(&["tag", "--list"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn status(&self) -> String {
        self.git(&["status", "--porcelain"])
    }

    /// Writes `shipit.toml` with `text` at the top of the repository and loads it.
    pub(crate) fn config(&self, text: &str) -> Config {
        self.write("shipit.toml", text);
        Config::parse(
            text,
            Path::new("shipit.toml"),
            &BTreeMap::<String, String>::new(),
            &self.root,
        )
        .unwrap_or_else(|e| panic!("config loads:\n{e}"))
    }
}
