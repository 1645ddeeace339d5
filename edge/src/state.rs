//! The route table on disk: `routes.json` in the edge directory, and its last good copy.
//!
//! It holds the live backend of each service (with its hosts, path prefixes and candidate,
//! the candidate's lease, and the route's maintenance and pause deadline) and the listen
//! address. Every change rewrites it atomically (temp file, fsync, rename,
//! fsync of the directory), so a crash leaves either the old or the new table, never half
//! of one. The same bytes go to `routes.json.good` the same way, renamed after
//! `routes.json`: a second copy, in a file of its own, for when something other than this
//! code damages the first. Draining backends are not saved: after a restart nothing is in
//! flight. Both files are 0600 (see [`crate::directory`]).
//!
//! Reading the table back ([`load`], and [`restore`] when the edge starts):
//! - no `routes.json`: no routes. The good copy is not looked at: removing `routes.json` is
//!   how an operator starts an edge with none.
//! - `routes.json` parses: its routes.
//! - it does not parse (truncated, empty, garbage): the routes of `routes.json.good`, with a
//!   warning naming both files; when that one is missing or does not parse either, no
//!   routes, with a warning. The edge starts either way, as a release can give it routes
//!   again; an edge that does not start serves nothing at all.
//! - a `version` newer than [`FORMAT_VERSION`] is refused with
//!   [`EdgeError::RoutesVersion`]: such a file is not damaged, and starting without its
//!   routes would drop them. Every older format still loads (fields added later are
//!   optional).
//!
//! [`restore`] also moves each file that does not parse to `<name>.broken-<UTC time>`
//! before the edge saves its table again, so the damaged file is kept, not overwritten.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::lease::Lease;
use crate::{Backend, EdgeError, ROUTES_FILE, directory};

/// The format version written to `routes.json`; files up to it are read. Version 2 added
/// the candidate's lease: an edge that reads only version 1 would not know to withdraw it.
/// Version 3 added a route's maintenance and pause: an edge that reads only version 2
/// would serve a route its operator closed.
pub const FORMAT_VERSION: u32 = 3;

/// The last good copy of `routes.json`, in the edge directory.
pub const GOOD_ROUTES_FILE: &str = "routes.json.good";

/// Put between a file's name and the time it was set aside because it did not parse.
const BROKEN_INFIX: &str = ".broken-";

/// The content of `routes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRoutes {
    pub version: u32,
    pub listen: SocketAddr,
    pub routes: Vec<SavedRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRoute {
    pub service: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path prefixes, normalized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_hosts: Vec<String>,
    pub live: Backend,
    /// The idle slot's registered backend and its share of new clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<SavedCandidate>,
    pub since: Timestamp,
    /// The route's pause (see [`crate::pause`]), since format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<SavedPause>,
    /// The route's maintenance (see [`crate::maintenance`]), since format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<SavedMaintenance>,
}

/// A pause, as the wall-clock time it ends: an edge that starts before it keeps holding
/// requests until then, one that starts after it answers them 503 until a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPause {
    pub deadline: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedMaintenance {
    /// The operator's message; `None`: the default page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub retry_after_s: u32,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedCandidate {
    pub backend: Backend,
    pub percent: u8,
    /// Its lease, when it has one (see [`crate::lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Whether its split keeps clients on their side (absent in older files: it does).
    #[serde(
        default = "crate::api::sticky_by_default",
        skip_serializing_if = "is_sticky"
    )]
    pub sticky: bool,
}

fn is_sticky(sticky: &bool) -> bool {
    *sticky
}

/// The table an edge starts with, and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub routes: SavedRoutes,
    pub from: PathBuf,
}

pub fn routes_path(dir: &Path) -> PathBuf {
    dir.join(ROUTES_FILE)
}

pub fn good_routes_path(dir: &Path) -> PathBuf {
    dir.join(GOOD_ROUTES_FILE)
}

/// Reads the saved routes of `dir`: `routes.json`, or its last good copy when it does not
/// parse (with a warning). `None` when there is no `routes.json`, or when neither parses.
/// Changes no file (the pipeline reads it while the edge is down).
pub fn load(dir: &Path) -> Result<Option<SavedRoutes>, EdgeError> {
    let reading = read(dir)?;
    if let Some(warning) = reading.warning(&[]) {
        tracing::warn!("{warning}");
    }
    Ok(reading.restored.map(|r| r.routes))
}

/// [`load`] for an edge that starts: each file that does not parse is first moved aside to
/// `<name>.broken-<UTC time>` (0600), where the edge's next save cannot overwrite it.
pub fn restore(dir: &Path) -> Result<Option<Restored>, EdgeError> {
    let reading = read(dir)?;
    let mut kept = Vec::new();
    for (path, _) in &reading.broken {
        kept.push(set_aside(path)?);
    }
    if let Some(warning) = reading.warning(&kept) {
        tracing::warn!("{warning}");
    }
    Ok(reading.restored)
}

/// Writes `routes.json` in `dir` atomically, then its good copy.
pub fn save(dir: &Path, routes: &SavedRoutes) -> Result<(), EdgeError> {
    let mut bytes = serde_json::to_vec_pretty(routes).expect("routes serialize to JSON");
    bytes.push(b'\n');
    replace_all(&[
        (&routes_path(dir), &bytes),
        (&good_routes_path(dir), &bytes),
    ])
}

/// Replaces `path` with `bytes` so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EdgeError> {
    replace_all(&[(path, bytes)])
}

/// Why a routes file is not used.
enum Unusable {
    /// It does not parse: truncated, empty, garbage.
    Broken(String),
    /// It is of a newer format than this edge reads.
    Newer(u32),
}

fn parse(bytes: &[u8]) -> Result<SavedRoutes, Unusable> {
    /// Read first, with every other field ignored, so that a newer format is recognised
    /// as such rather than as a file that does not parse.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let broken = |e: serde_json::Error| Unusable::Broken(e.to_string());
    let Versioned { version } = serde_json::from_slice(bytes).map_err(broken)?;
    if version > FORMAT_VERSION {
        return Err(Unusable::Newer(version));
    }
    if version == 0 {
        return Err(Unusable::Broken(
            "format version 0 was never written".to_string(),
        ));
    }
    serde_json::from_slice(bytes).map_err(broken)
}

/// What the route files of a directory hold.
#[derive(Debug, Default)]
struct Reading {
    restored: Option<Restored>,
    /// The files that exist but do not parse, with why, `routes.json` first.
    broken: Vec<(PathBuf, String)>,
}

fn read(dir: &Path) -> Result<Reading, EdgeError> {
    let mut reading = Reading::default();
    for path in [routes_path(dir), good_routes_path(dir)] {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(EdgeError::io("read the routes file", path, e)),
        };
        match parse(&bytes) {
            Ok(routes) => {
                reading.restored = Some(Restored { routes, from: path });
                break;
            }
            Err(Unusable::Newer(found)) => {
                return Err(EdgeError::RoutesVersion {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Err(Unusable::Broken(reason)) => reading.broken.push((path, reason)),
        }
    }
    Ok(reading)
}

impl Reading {
    /// What an operator should know, when a file did not parse; `kept` are the paths the
    /// broken files were moved to, in order.
    fn warning(&self, kept: &[PathBuf]) -> Option<String> {
        let ((current, reason), rest) = self.broken.split_first()?;
        let mut text = format!("`{}` does not parse ({reason}); ", current.display());
        match (&self.restored, rest.first()) {
            (Some(restored), _) => text.push_str(&format!(
                "using the last good copy `{}`",
                restored.from.display()
            )),
            (None, Some((good, reason))) => text.push_str(&format!(
                "nor does the last good copy `{}` ({reason}); using no routes",
                good.display()
            )),
            (None, None) => text.push_str("there is no last good copy; using no routes"),
        }
        if !kept.is_empty() {
            let kept: Vec<String> = kept.iter().map(|p| format!("`{}`", p.display())).collect();
            text.push_str(&format!(
                "; kept the broken file(s) as {}",
                kept.join(" and ")
            ));
        }
        Some(text)
    }
}

/// Moves `path` to a name of its own, `<name>.broken-<UTC time>` (then `-2`, `-3`… when
/// that is taken), and makes it 0600.
fn set_aside(path: &Path) -> Result<PathBuf, EdgeError> {
    let mut base = path.as_os_str().to_owned();
    base.push(BROKEN_INFIX);
    base.push(Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    // Only the edge holding the directory's lock sets files aside: no one races for a name.
    while std::fs::symlink_metadata(&aside).is_ok() {
        n += 1;
        let mut numbered = base.clone();
        numbered.push(format!("-{n}"));
        aside = PathBuf::from(numbered);
    }
    std::fs::rename(path, &aside)
        .map_err(|e| EdgeError::io("set aside the broken routes file", path, e))?;
    directory::set_mode(&aside, directory::FILE_MODE)
        .map_err(|e| EdgeError::io("make private", &aside, e))?;
    Ok(aside)
}

/// Replaces each file with its bytes, in the order given: all are written and fsynced
/// under temporary names (0600) first, then renamed into place, then the directory is
/// fsynced once. All paths are in one directory.
fn replace_all(files: &[(&Path, &[u8])]) -> Result<(), EdgeError> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let Some(&(first, _)) = files.first() else {
        return Ok(());
    };
    let dir = first.parent().unwrap_or(Path::new("."));
    let mut staged: Vec<PathBuf> = Vec::with_capacity(files.len());
    let discard = |staged: &[PathBuf]| {
        for tmp in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for &(path, bytes) in files {
        debug_assert_eq!(path.parent().unwrap_or(Path::new(".")), dir);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let written = directory::open(&tmp, OpenOptions::new().write(true).create_new(true))
            .and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_all()
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            discard(&staged);
            return Err(EdgeError::io("write", tmp, e));
        }
        staged.push(tmp);
    }
    for (at, (&(path, _), tmp)) in files.iter().zip(&staged).enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            discard(&staged[at..]);
            return Err(EdgeError::io("replace", path, e));
        }
    }
    // The renames are durable only once the directory entries are.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EdgeError::io("sync the directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Slot;

    fn saved() -> SavedRoutes {
        SavedRoutes {
            version: FORMAT_VERSION,
            listen: "127.0.0.1:8080".parse().unwrap(),
            routes: vec![SavedRoute {
                service: "web".into(),
                hosts: vec![],
                paths: vec![],
                preview_hosts: vec![],
                live: Backend {
                    slot: Slot::Green,
                    release: "r7".into(),
                    addr: "127.0.0.1:9002".parse().unwrap(),
                    more_addrs: Vec::new(),
                },
                candidate: None,
                since: "2026-11-22T10:00:00Z".parse().unwrap(),
                pause: None,
                maintenance: None,
            }],
        }
    }

    #[test]
    fn saved_routes_load_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), &saved()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(saved()));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn save_writes_the_file_and_its_good_copy_private_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &saved()).unwrap();
        save(dir.path(), &saved()).unwrap();
        assert_eq!(names(dir.path()), [ROUTES_FILE, GOOD_ROUTES_FILE]);
        let current = std::fs::read(routes_path(dir.path())).unwrap();
        assert_eq!(
            std::fs::read(good_routes_path(dir.path())).unwrap(),
            current
        );
        assert_eq!(mode(&routes_path(dir.path())), 0o600);
        assert_eq!(mode(&good_routes_path(dir.path())), 0o600);
        // A pid file (or any file written through the same path) too.
        let pid = dir.path().join(crate::PID_FILE);
        write_atomic(&pid, b"1\n").unwrap();
        assert_eq!(mode(&pid), 0o600);
    }

    #[test]
    fn routes_file_shape() {
        let json: serde_json::Value = serde_json::to_value(saved()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 3,
                "listen": "127.0.0.1:8080",
                "routes": [{
                    "service": "web",
                    "live": {"slot": "green", "release": "r7", "addr": "127.0.0.1:9002"},
                    "since": "2026-11-22T10:00:00Z"
                }]
            })
        );
    }

    #[test]
    fn routes_file_with_paths_and_candidate_loads_back_and_old_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let routes = rich();
        save(dir.path(), &routes).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(routes.clone()));
        let json = serde_json::to_value(&routes).unwrap();
        assert_eq!(json["routes"][0]["candidate"]["percent"], 10);
        assert_eq!(
            json["routes"][0]["candidate"]["lease"],
            serde_json::json!({"lease_ms": 10000, "expires_at": "2999-01-01T00:00:00Z"})
        );
        assert_eq!(json["routes"][0]["paths"], serde_json::json!(["/api"]));

        // A file written before these fields existed.
        std::fs::write(
            dir.path().join(ROUTES_FILE),
            r#"{"version": 1, "listen": "127.0.0.1:8080", "routes": [{"service": "web",
                "hosts": ["a.test"], "live": {"slot": "green", "release": "r7",
                "addr": "127.0.0.1:9002"}, "since": "2026-11-22T10:00:00Z"}]}"#,
        )
        .unwrap();
        let old = load(dir.path()).unwrap().unwrap();
        assert_eq!(old.routes[0].hosts, vec!["a.test".to_string()]);
        assert!(old.routes[0].paths.is_empty());
        assert_eq!(old.routes[0].candidate, None);

        // A format 1 candidate, which had no lease, loads without one.
        std::fs::write(
            dir.path().join(ROUTES_FILE),
            r#"{"version": 1, "listen": "127.0.0.1:8080", "routes": [{"service": "web",
                "live": {"slot": "green", "release": "r7", "addr": "127.0.0.1:9002"},
                "candidate": {"backend": {"slot": "blue", "release": "r8",
                "addr": "127.0.0.1:9001"}, "percent": 10},
                "since": "2026-11-22T10:00:00Z"}]}"#,
        )
        .unwrap();
        let old = load(dir.path()).unwrap().unwrap();
        let candidate = old.routes[0].candidate.as_ref().unwrap();
        assert_eq!((candidate.percent, candidate.lease), (10, None));
    }

    #[test]
    fn maintenance_and_pause_load_back_and_format_2_files_load_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut routes = rich();
        routes.routes[0].pause = Some(SavedPause {
            deadline: "2026-11-22T10:30:00Z".parse().unwrap(),
        });
        save(dir.path(), &routes).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(routes.clone()));
        let json = serde_json::to_value(&routes).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(
            json["routes"][0]["maintenance"],
            serde_json::json!({"message": "<b>back at 10:00</b>", "retry_after_s": 120,
                "since": "2026-11-22T09:00:00Z"})
        );
        assert_eq!(
            json["routes"][0]["pause"],
            serde_json::json!({"deadline": "2026-11-22T10:30:00Z"})
        );

        // What an edge of format 2 wrote.
        std::fs::write(
            dir.path().join(ROUTES_FILE),
            r#"{"version": 2, "listen": "127.0.0.1:8080", "routes": [{"service": "web",
                "live": {"slot": "green", "release": "r7", "addr": "127.0.0.1:9002"},
                "candidate": {"backend": {"slot": "blue", "release": "r8",
                "addr": "127.0.0.1:9001"}, "percent": 10, "lease": {"lease_ms": 10000,
                "expires_at": "2999-01-01T00:00:00Z"}},
                "since": "2026-11-22T10:00:00Z"}]}"#,
        )
        .unwrap();
        let old = load(dir.path()).unwrap().unwrap();
        assert_eq!(old.routes[0].maintenance, None);
        assert_eq!(old.routes[0].pause, None);
        assert_eq!(old.routes[0].candidate.as_ref().unwrap().percent, 10);
    }

    /// A table with every optional field, so that truncations cut through all of them.
    fn rich() -> SavedRoutes {
        let mut routes = saved();
        routes.routes[0].hosts = vec!["app.test".into()];
        routes.routes[0].paths = vec!["/api".into()];
        routes.routes[0].preview_hosts = vec!["preview.test".into()];
        routes.routes[0].candidate = Some(SavedCandidate {
            backend: Backend {
                slot: Slot::Blue,
                release: "r8".into(),
                addr: "127.0.0.1:9001".parse().unwrap(),
                more_addrs: vec!["127.0.0.1:9003".parse().unwrap()],
            },
            percent: 10,
            // Ends long after any test: an edge started on it keeps the candidate.
            lease: Some(Lease {
                lease_ms: 10_000,
                expires_at: "2999-01-01T00:00:00Z".parse().unwrap(),
            }),
            sticky: false,
        });
        routes.routes[0].maintenance = Some(SavedMaintenance {
            message: Some("<b>back at 10:00</b>".into()),
            retry_after_s: 120,
            since: "2026-11-22T09:00:00Z".parse().unwrap(),
        });
        routes
    }

    fn broken_files(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|name| name.contains(BROKEN_INFIX))
            .collect()
    }

    /// A directory on a tmpfs when there is one: each start fsyncs a few times, which makes
    /// hundreds of starts take seconds on a disk, and what is tested here is what the edge
    /// reads back, not durability.
    fn scratch_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
    }

    /// Starts an edge on `good` saved whole as the last good copy and cut to `len` bytes as
    /// `routes.json`, and checks that it serves `good`'s routes and kept the cut file aside.
    async fn start_on_truncated(good: &SavedRoutes, bytes: &[u8], len: usize) {
        let dir = scratch_dir();
        let truncated = &bytes[..len];
        std::fs::write(good_routes_path(dir.path()), bytes).unwrap();
        std::fs::write(routes_path(dir.path()), truncated).unwrap();
        let parses = serde_json::from_slice::<SavedRoutes>(truncated).is_ok();

        let edge = crate::server::start(crate::EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap_or_else(|e| panic!("truncated at {len}: the edge did not start: {e}"));
        let status = edge.client().status().await.unwrap();
        edge.shutdown().await.unwrap();

        assert_eq!(status.routes.len(), 1, "truncated at {len}");
        let route = &status.routes[0];
        assert_eq!(route.live.as_ref(), Some(&good.routes[0].live), "at {len}");
        assert_eq!(route.paths, good.routes[0].paths, "truncated at {len}");
        assert_eq!(
            route.candidate.as_ref().map(|c| (&c.backend, c.percent)),
            Some((&good.routes[0].candidate.as_ref().unwrap().backend, 10)),
            "truncated at {len}"
        );
        // The edge saved its table again, whole, and kept the damaged file aside.
        let resaved = load(dir.path()).unwrap().map(|saved| saved.routes);
        assert_eq!(resaved.as_ref(), Some(&good.routes), "truncated at {len}");
        let broken = broken_files(dir.path());
        if parses {
            assert!(broken.is_empty(), "truncated at {len}: {broken:?}");
        } else {
            assert_eq!(broken.len(), 1, "truncated at {len}: {broken:?}");
            let kept = dir.path().join(&broken[0]);
            assert!(broken[0].starts_with(&format!("{ROUTES_FILE}{BROKEN_INFIX}")));
            assert_eq!(std::fs::read(&kept).unwrap(), truncated, "at {len}");
            assert_eq!(mode(&kept), 0o600);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_file_truncated_at_any_offset_starts_the_edge_with_the_last_good_routes() {
        use futures_util::StreamExt;
        let good = rich();
        let mut bytes = serde_json::to_vec_pretty(&good).unwrap();
        bytes.push(b'\n');
        futures_util::stream::iter(0..bytes.len())
            .for_each_concurrent(16, |len| start_on_truncated(&good, &bytes, len))
            .await;
    }

    #[test]
    fn broken_routes_file_falls_back_to_the_good_copy_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &rich()).unwrap();
        std::fs::write(routes_path(dir.path()), b"{ not json").unwrap();
        // The pipeline's read changes no file.
        assert_eq!(load(dir.path()).unwrap(), Some(rich()));
        assert!(broken_files(dir.path()).is_empty());

        let reading = read(dir.path()).unwrap();
        let warning = reading.warning(&[]).unwrap();
        assert!(
            warning.contains(&*routes_path(dir.path()).to_string_lossy()),
            "{warning}"
        );
        assert!(
            warning.contains(&*good_routes_path(dir.path()).to_string_lossy()),
            "{warning}"
        );

        let restored = restore(dir.path()).unwrap().unwrap();
        assert_eq!(restored.routes, rich());
        assert_eq!(restored.from, good_routes_path(dir.path()));
        assert!(!routes_path(dir.path()).exists());
        assert_eq!(broken_files(dir.path()).len(), 1);
    }

    #[test]
    fn neither_file_parsing_means_no_routes_and_both_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(routes_path(dir.path()), b"").unwrap();
        std::fs::write(good_routes_path(dir.path()), b"{\"version\": 1, \"listen\"").unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let warning = read(dir.path()).unwrap().warning(&[]).unwrap();
        assert!(warning.contains("using no routes"), "{warning}");

        assert_eq!(restore(dir.path()).unwrap(), None);
        let broken = broken_files(dir.path());
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(!routes_path(dir.path()).exists());
        assert!(!good_routes_path(dir.path()).exists());
        // A second failure within the same second keeps both of its files too.
        std::fs::write(routes_path(dir.path()), b"x").unwrap();
        assert_eq!(restore(dir.path()).unwrap(), None);
        assert_eq!(broken_files(dir.path()).len(), 3);
    }

    #[tokio::test]
    async fn edge_without_any_readable_routes_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(routes_path(dir.path()), b"garbage").unwrap();
        let edge = crate::server::start(crate::EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap();
        assert!(edge.client().status().await.unwrap().routes.is_empty());
        edge.shutdown().await.unwrap();
        assert_eq!(broken_files(dir.path()).len(), 1);
    }

    #[test]
    fn missing_routes_file_means_no_routes_even_with_a_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &saved()).unwrap();
        std::fs::remove_file(routes_path(dir.path())).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        assert_eq!(restore(dir.path()).unwrap(), None);
    }

    #[tokio::test]
    async fn newer_format_version_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let newer = br#"{"version": 4, "listen": "127.0.0.1:8080", "routes": [], "zones": {}}"#;
        std::fs::write(routes_path(dir.path()), newer).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                EdgeError::RoutesVersion {
                    found: 4,
                    supported: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&*routes_path(dir.path()).to_string_lossy()),
            "{message}"
        );
        assert!(message.contains("version 4"), "{message}");

        let started = crate::server::start(crate::EdgeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            dir: dir.path().to_path_buf(),
        })
        .await;
        assert!(
            matches!(started, Err(EdgeError::RoutesVersion { .. })),
            "{started:?}"
        );
        assert_eq!(std::fs::read(routes_path(dir.path())).unwrap(), newer);
        assert!(broken_files(dir.path()).is_empty());

        // Behind a broken current file, a newer good copy is refused the same way.
        std::fs::write(good_routes_path(dir.path()), newer).unwrap();
        std::fs::write(routes_path(dir.path()), b"{").unwrap();
        let err = restore(dir.path()).unwrap_err();
        assert!(matches!(err, EdgeError::RoutesVersion { .. }), "{err:?}");
        assert!(broken_files(dir.path()).is_empty());
    }

    #[test]
    fn format_version_zero_does_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            routes_path(dir.path()),
            br#"{"version": 0, "listen": "127.0.0.1:8080", "routes": []}"#,
        )
        .unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
    }
}
