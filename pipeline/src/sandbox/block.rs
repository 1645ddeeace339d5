//! The `[targets.sandbox]` block of the config: its text, and writing it in or taking it out.
//!
//! The block sits between two marker lines. The lines between them are the sandbox's: `up`
//! replaces them (a new emulator has new ARNs), `down` removes them, and nothing outside
//! them is touched. A `[targets.sandbox]` table that is not between the markers is the
//! user's: it is never overwritten, and `up` refuses to write beside it.

use std::path::Path;

use super::SandboxError;
use super::infra::Infra;

pub const BEGIN: &str =
    "# >>> shipit sandbox: written by `shipit sandbox up`, removed by `shipit sandbox down`";
pub const END: &str = "# <<< shipit sandbox";

/// The block, markers included, for a sandbox at `endpoint` whose images go to
/// `repository`.
pub fn text(
    target: &str,
    endpoint: &str,
    urls: (&str, &str),
    infra: &Infra,
    repository: &str,
) -> String {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{BEGIN}\n\
         [targets.{target}]\n\
         kind = \"ecs\"\n\
         region = \"{region}\"\n\
         endpoint = \"{endpoint}\"\n\
         # The load balancer's listeners, served on this machine by the sandbox.\n\
         url = \"{url}\"\n\
         test_url = \"{test_url}\"\n\
         cluster = \"{cluster}\"\n\
         listener_arn = \"{listener}\"\n\
         test_listener_arn = \"{test}\"\n\
         target_groups = {{ blue = \"{blue}\", green = \"{green}\" }}\n\
         subnets = [{subnets}]\n\
         security_groups = [\"{sg}\"]\n\
         repository = \"{repository}\"\n\
         # Tasks per slot, run on this machine's engine; the load balancer routes to each.\n\
         desired_count = 2\n\
         {END}\n",
        region = infra.region,
        url = urls.0,
        test_url = urls.1,
        cluster = infra.cluster,
        listener = infra.listener_arn,
        test = infra.test_listener_arn,
        blue = infra.target_groups.blue,
        green = infra.target_groups.green,
        subnets = list(&infra.subnets),
        sg = infra.security_group,
    )
}

/// `text` without the sandbox's block (markers and what is between them); `None` when it
/// has none. A begin marker without its end is an error: what follows it is not ours to cut.
fn without_block(text: &str, path: &Path) -> Result<Option<String>, SandboxError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Some(begin) = lines.iter().position(|l| l.trim_end() == BEGIN) else {
        return Ok(None);
    };
    let Some(end) = lines[begin..]
        .iter()
        .position(|l| l.trim_end() == END)
        .map(|i| begin + i)
    else {
        return Err(SandboxError::Config {
            path: path.to_path_buf(),
            message: format!("it has the line `{BEGIN}` but no end marker `{END}` after it"),
            hint: "put the end marker back after the [targets.sandbox] block, or remove both \
                   markers and the block"
                .into(),
        });
    };
    let mut kept: String = lines[..begin].concat();
    // The blank line `write` put before the block goes with it.
    if kept.ends_with("\n\n") {
        kept.pop();
    }
    kept.push_str(&lines[end + 1..].concat());
    Ok(Some(kept))
}

/// Whether the TOML `text` has a `targets.<target>` table.
fn has_target(text: &str, target: &str) -> bool {
    text.parse::<toml::Table>().is_ok_and(|t| {
        t.get("targets")
            .and_then(|v| v.as_table())
            .is_some_and(|targets| targets.contains_key(target))
    })
}

/// Writes `block` into the config at `path`: in place of the sandbox's block if it has one,
/// else at its end. Refuses a config whose `[targets.<target>]` is the user's own. The file
/// is replaced through a temporary file beside it, keeping its permissions.
pub fn write(path: &Path, target: &str, block: &str) -> Result<(), SandboxError> {
    let base = check(path, target)?;
    let mut new = base;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    if !new.is_empty() {
        new.push('\n');
    }
    new.push_str(block);
    replace(path, &new)
}

/// What the config at `path` holds without the sandbox's block, once it is known that `up`
/// may write there: the file is writable, has no broken markers and no `[targets.<target>]`
/// of the user's. `up` checks this before it starts anything.
pub fn check(path: &Path, target: &str) -> Result<String, SandboxError> {
    // Written through a temporary file and a rename, so the file's own permission is asked
    // first: the rename would go around a read-only config.
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| SandboxError::Io {
            action: format!("write {}", path.display()),
            source,
        })?;
    let text = read(path)?;
    let base = without_block(&text, path)?.unwrap_or(text);
    if has_target(&base, target) {
        return Err(SandboxError::Config {
            path: path.to_path_buf(),
            message: format!(
                "it already has a [targets.{target}] table that `shipit sandbox up` did not write"
            ),
            hint: format!(
                "rename or remove that table, or run `shipit sandbox up --print` and copy what \
                 it prints (the sandbox's target is named `{target}`)"
            ),
        });
    }
    Ok(base)
}

/// Removes the sandbox's block from the config at `path`; `false` when it had none.
pub fn remove(path: &Path) -> Result<bool, SandboxError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(SandboxError::Io {
                action: format!("read {}", path.display()),
                source,
            });
        }
    };
    match without_block(&text, path)? {
        Some(kept) => replace(path, &kept).map(|()| true),
        None => Ok(false),
    }
}

fn read(path: &Path) -> Result<String, SandboxError> {
    std::fs::read_to_string(path).map_err(|source| SandboxError::Io {
        action: format!("read {}", path.display()),
        source,
    })
}

fn replace(path: &Path, text: &str) -> Result<(), SandboxError> {
    let io = |source| SandboxError::Io {
        action: format!("write {}", path.display()),
        source,
    };
    // A config reached through a symbolic link is written where the link points, and the
    // link stays.
    let path = &std::fs::canonicalize(path).map_err(io)?;
    let mode = std::fs::metadata(path).map_err(io)?.permissions();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let written = std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::super::infra::Groups;
    use super::*;

    fn infra(n: u32) -> Infra {
        Infra {
            region: "us-east-1".into(),
            vpc_id: format!("vpc-{n}"),
            subnets: vec![format!("subnet-{n}a"), format!("subnet-{n}b")],
            security_group: format!("sg-{n}"),
            load_balancer_arn: "arn:lb".into(),
            load_balancer_dns: "lb.local".into(),
            target_groups: Groups {
                blue: format!("arn:tg/blue-{n}"),
                green: format!("arn:tg/green-{n}"),
            },
            listener_arn: format!("arn:listener/{n}/80"),
            test_listener_arn: format!("arn:listener/{n}/8080"),
            cluster: "sandbox".into(),
        }
    }

    const CONFIG: &str =
        "[services.web]\ncontext = \".\"\nport = 8080\n\n[targets.local]\nkind = \"local\"\n";

    fn config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shipit.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_block_is_a_target_table_with_every_resource() {
        let block = text(
            "sandbox",
            "http://127.0.0.1:4566",
            ("http://127.0.0.1:8090/", "http://127.0.0.1:8091"),
            &infra(1),
            "127.0.0.1:5100/web",
        );
        let table: toml::Table = block.parse().unwrap();
        let target = &table["targets"]["sandbox"];
        assert_eq!(target["kind"].as_str(), Some("ecs"));
        assert_eq!(target["endpoint"].as_str(), Some("http://127.0.0.1:4566"));
        assert_eq!(target["url"].as_str(), Some("http://127.0.0.1:8090/"));
        assert_eq!(target["test_url"].as_str(), Some("http://127.0.0.1:8091"));
        assert_eq!(target["desired_count"].as_integer(), Some(2));
        assert_eq!(target["listener_arn"].as_str(), Some("arn:listener/1/80"));
        assert_eq!(
            target["target_groups"]["green"].as_str(),
            Some("arn:tg/green-1")
        );
        assert_eq!(target["subnets"].as_array().unwrap().len(), 2);
        assert_eq!(target["repository"].as_str(), Some("127.0.0.1:5100/web"));
    }

    #[test]
    fn write_appends_then_replaces_and_remove_gives_the_file_back() {
        let (_dir, path) = config(CONFIG);
        write(
            &path,
            "sandbox",
            &text(
                "sandbox",
                "http://e",
                ("http://u/", "http://t"),
                &infra(1),
                "r:1/x",
            ),
        )
        .unwrap();
        let once = std::fs::read_to_string(&path).unwrap();
        assert!(once.starts_with(CONFIG), "{once}");
        assert!(once.contains("arn:listener/1/80"));
        // A second up with new resources replaces the block, and only it.
        write(
            &path,
            "sandbox",
            &text(
                "sandbox",
                "http://e",
                ("http://u/", "http://t"),
                &infra(2),
                "r:1/x",
            ),
        )
        .unwrap();
        let twice = std::fs::read_to_string(&path).unwrap();
        assert!(!twice.contains("arn:listener/1/80"), "{twice}");
        assert!(twice.contains("arn:listener/2/80"));
        assert_eq!(twice.matches("[targets.sandbox]").count(), 1);
        assert!(remove(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), CONFIG);
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn lines_after_the_block_are_kept() {
        let (_dir, path) = config(CONFIG);
        write(
            &path,
            "sandbox",
            &text(
                "sandbox",
                "http://e",
                ("http://u/", "http://t"),
                &infra(1),
                "r:1/x",
            ),
        )
        .unwrap();
        let mut text_now = std::fs::read_to_string(&path).unwrap();
        text_now.push_str("\n[targets.other]\nkind = \"local\"\nlisten = \"127.0.0.1:9\"\n");
        std::fs::write(&path, &text_now).unwrap();
        write(
            &path,
            "sandbox",
            &text(
                "sandbox",
                "http://e",
                ("http://u/", "http://t"),
                &infra(3),
                "r:1/x",
            ),
        )
        .unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now.contains("[targets.other]") && now.contains("arn:listener/3/80"),
            "{now}"
        );
        assert!(remove(&path).unwrap());
        let left = std::fs::read_to_string(&path).unwrap();
        assert!(
            left.contains("[targets.other]") && !left.contains("sandbox"),
            "{left}"
        );
    }

    #[test]
    fn a_hand_written_sandbox_target_is_never_overwritten() {
        let mine = format!("{CONFIG}\n[targets.sandbox]\nkind = \"local\"\n");
        let (_dir, path) = config(&mine);
        let err = write(
            &path,
            "sandbox",
            &text(
                "sandbox",
                "http://e",
                ("http://u/", "http://t"),
                &infra(1),
                "r:1/x",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("[targets.sandbox]") && err.contains("shipit.toml"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), mine);
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn a_begin_marker_without_its_end_is_refused() {
        let broken = format!("{CONFIG}\n{BEGIN}\n[targets.sandbox]\nkind = \"ecs\"\n");
        let (_dir, path) = config(&broken);
        let err = remove(&path).unwrap_err().to_string();
        assert!(err.contains("no end marker") && err.contains(END), "{err}");
        assert!(write(&path, "sandbox", "x").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    }
}
