//! The command reference in the README, the completions and the man page, checked against
//! what the binary's `--help` says. The README's `## Commands` block has one line per command
//! (`shipit <path> [flags]  # what it does`); every command `--help` lists must be there with
//! every one of its flags, and nothing else may be.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::harness::{SHIPIT, assert_success, repo_root};

/// Flags every command takes; the README lists them once, under "Global flags".
const GLOBAL_FLAGS: [&str; 4] = ["--config", "--quiet", "--verbose", "--show-secrets"];
/// Commands whose output is not data a script would parse: they have no `--json`.
const WITHOUT_JSON: [&str; 3] = ["edge run", "completions", "man"];

/// One option of a `--help` page.
#[derive(Debug, Clone)]
struct Flag {
    short: Option<String>,
    long: String,
    help: String,
}

#[derive(Debug, Default)]
struct HelpPage {
    subcommands: Vec<String>,
    flags: Vec<Flag>,
}

fn help(path: &[String]) -> String {
    let out = Command::new(SHIPIT)
        .args(path)
        .arg("--help")
        .env("NO_COLOR", "1")
        .env_remove("SHIPIT_CONFIG")
        .output()
        .unwrap();
    assert_success(&out, &format!("shipit {} --help", path.join(" ")));
    String::from_utf8(out.stdout).unwrap()
}

/// Reads the `Commands:` and `Options:` sections of a help page. Long help puts an option's
/// text on the lines below it; short help puts it on the same line.
fn parse_help(text: &str) -> HelpPage {
    let mut page = HelpPage::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() {
            section = "";
            continue;
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match section {
            "Commands:" if indent == 2 => {
                let name = trimmed.split_whitespace().next().unwrap().to_string();
                if name != "help" {
                    page.subcommands.push(name);
                }
            }
            "Options:" if trimmed.starts_with('-') && indent <= 6 => {
                let (spec, text) = trimmed.split_once("  ").unwrap_or((trimmed, ""));
                let mut short = None;
                let mut long = None;
                for word in spec.split([',', ' ']).filter(|w| !w.is_empty()) {
                    if let Some(name) = word.strip_prefix("--") {
                        long = Some(format!("--{name}"));
                    } else if word.starts_with('-') {
                        short = Some(word.to_string());
                    }
                }
                page.flags.push(Flag {
                    short,
                    long: long.unwrap_or_else(|| panic!("an option without a long name: {line}")),
                    help: text.trim().to_string(),
                });
            }
            "Options:" if !trimmed.is_empty() => {
                // Long help: the option's text follows on its own lines.
                if let Some(flag) = page.flags.last_mut()
                    && flag.help.is_empty()
                {
                    flag.help = trimmed.to_string();
                }
            }
            _ => {}
        }
    }
    page
}

/// Every command that does something (no subcommands of its own), with its flags, found by
/// walking `--help` from the top.
fn leaf_commands() -> BTreeMap<String, Vec<Flag>> {
    let mut leaves = BTreeMap::new();
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let page = parse_help(&help(&path));
        if page.subcommands.is_empty() {
            leaves.insert(path.join(" "), page.flags);
        }
        for sub in page.subcommands {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    leaves
}

/// The README's command lines: path → the flags written on the line.
fn readme_commands() -> BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Commands\n")
        .expect("the README has a `## Commands` section")
        .1;
    let block = section
        .split_once("```")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("the Commands section opens with a code block")
        .0;
    let mut commands = BTreeMap::new();
    for line in block.lines().filter(|l| l.starts_with("shipit ")) {
        let usage = line.split_once('#').map_or(line, |(usage, _)| usage);
        let mut words = usage.split_whitespace().skip(1).peekable();
        let mut path = Vec::new();
        while let Some(word) = words.peek() {
            if word.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !word.starts_with('-') {
                path.push(words.next().unwrap().to_string());
            } else {
                break;
            }
        }
        let flags: BTreeSet<String> = words
            .flat_map(|w| w.split(['[', ']', '/', '|']))
            .filter(|w| w.starts_with('-'))
            .map(str::to_string)
            .collect();
        let previous = commands.insert(path.join(" "), flags);
        assert!(previous.is_none(), "the README lists `{line}` twice");
    }
    commands
}

#[test]
fn readme_command_reference_matches_help() {
    let leaves = leaf_commands();
    let readme = readme_commands();
    let mut problems = Vec::new();
    for (path, flags) in &leaves {
        let Some(written) = readme.get(path) else {
            problems.push(format!(
                "`shipit {path}` is missing from the README's Commands block"
            ));
            continue;
        };
        let mut known = BTreeSet::new();
        for flag in flags {
            if flag.long == "--help" || GLOBAL_FLAGS.contains(&flag.long.as_str()) {
                continue;
            }
            known.insert(flag.long.clone());
            known.extend(flag.short.clone());
            let listed = written.contains(&flag.long)
                || flag.short.as_ref().is_some_and(|s| written.contains(s));
            if !listed {
                problems.push(format!(
                    "`shipit {path}`: the README does not list {}",
                    flag.long
                ));
            }
        }
        for word in written.difference(&known) {
            problems.push(format!(
                "`shipit {path}`: the README lists {word}, which --help does not have"
            ));
        }
    }
    for path in readme.keys().filter(|p| !leaves.contains_key(*p)) {
        problems.push(format!(
            "the README lists `shipit {path}`, which --help does not have"
        ));
    }
    let readme_text = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    // The paragraph that starts with "Global flags:".
    let global = readme_text
        .split("\n\n")
        .find(|p| p.starts_with("Global flags:"))
        .expect("the README has a `Global flags:` paragraph");
    for flag in GLOBAL_FLAGS {
        if !global.contains(flag) {
            problems.push(format!("the README's Global flags paragraph lacks {flag}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_flag_has_help_and_every_data_command_has_json() {
    let mut problems = Vec::new();
    for (path, flags) in leaf_commands() {
        for flag in &flags {
            if flag.help.is_empty() || flag.help.starts_with("[env:") {
                problems.push(format!("`shipit {path}` {}: no help text", flag.long));
            }
        }
        let has_json = flags.iter().any(|f| f.long == "--json");
        if has_json == WITHOUT_JSON.contains(&path.as_str()) {
            problems.push(format!(
                "`shipit {path}`: --json is {}",
                if has_json { "unexpected" } else { "missing" }
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn completions_name_every_command() {
    let leaves = leaf_commands();
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(SHIPIT)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_success(&out, &format!("shipit completions {shell}"));
        let script = String::from_utf8(out.stdout).unwrap();
        for path in leaves.keys().filter(|p| !p.is_empty()) {
            let last = path.rsplit(' ').next().unwrap();
            assert!(
                script.contains(last),
                "the {shell} completions do not mention `{path}`"
            );
        }
        if shell == "bash" {
            // The script must be valid bash, not just contain the names.
            let file = dir.path().join("shipit.bash");
            std::fs::write(&file, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
            assert_success(&check, "bash -n on the bash completions");
            assert!(script.contains("--no-version") && script.contains("complete -F"));
        }
    }
    let out = Command::new(SHIPIT)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_has_a_page_per_command() {
    let out = Command::new(SHIPIT).arg("man").output().unwrap();
    assert_success(&out, "shipit man");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH shipit 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    assert!(page.contains("shipit\\-release"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SHIPIT)
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_success(&out, "shipit man --dir");
    let leaves = leaf_commands();
    let pages = std::iter::once("shipit.1".to_string()).chain(
        leaves
            .keys()
            .map(|path| format!("shipit-{}.1", path.replace(' ', "-"))),
    );
    for name in pages {
        let text = std::fs::read_to_string(dir.path().join(&name))
            .unwrap_or_else(|e| panic!("{name} was not written: {e}"));
        assert!(
            text.contains(".SH OPTIONS"),
            "{name} has no options:\n{text}"
        );
    }
}
