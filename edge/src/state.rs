//! The route table on disk: `routes.json` in the edge directory.
//!
//! It holds the live backend of each service (with its hosts, path prefixes and candidate)
//! and the listen address, and is rewritten
//! atomically (temp file, fsync, rename, fsync of the directory) on every change, so a
//! crash leaves either the old or the new table, never half of one. Draining backends are
//! not saved: after a restart nothing is in flight.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::route::RouteView;
use crate::{Backend, EdgeError, ROUTES_FILE, directory};

/// The format version written to `routes.json`.
const FORMAT_VERSION: u32 = 1;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedCandidate {
    pub backend: Backend,
    pub percent: u8,
}

impl SavedRoutes {
    /// The routes worth saving: those with a live backend.
    pub fn from_view(listen: SocketAddr, view: &[RouteView]) -> SavedRoutes {
        SavedRoutes {
            version: FORMAT_VERSION,
            listen,
            routes: view.iter().filter_map(RouteView::saved).collect(),
        }
    }
}

pub fn routes_path(dir: &Path) -> PathBuf {
    dir.join(ROUTES_FILE)
}

/// Reads `routes.json` from `dir`; `None` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<SavedRoutes>, EdgeError> {
    let path = routes_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EdgeError::io("read the routes file", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| EdgeError::RoutesCorrupt { path, source })
}

/// Writes `routes.json` in `dir` atomically.
pub fn save(dir: &Path, routes: &SavedRoutes) -> Result<(), EdgeError> {
    let mut bytes = serde_json::to_vec_pretty(routes).expect("routes serialize to JSON");
    bytes.push(b'\n');
    write_atomic(&routes_path(dir), &bytes)
}

/// Replaces `path` with `bytes` so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EdgeError> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = directory::open(&tmp, OpenOptions::new().write(true).create_new(true)).and_then(
        |mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        },
    );
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(EdgeError::io("write", tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(EdgeError::io("replace", path, e));
    }
    // The rename is durable only once the directory entry is.
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
                },
                candidate: None,
                since: "2026-11-22T10:00:00Z".parse().unwrap(),
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

    #[test]
    fn saved_files_are_private() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &saved()).unwrap();
        let mode = std::fs::metadata(routes_path(dir.path())).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn save_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &saved()).unwrap();
        save(dir.path(), &saved()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![ROUTES_FILE.to_string()]);
    }

    #[test]
    fn routes_file_shape() {
        let json: serde_json::Value = serde_json::to_value(saved()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
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
        let mut routes = saved();
        routes.routes[0].paths = vec!["/api".into()];
        routes.routes[0].preview_hosts = vec!["preview.test".into()];
        routes.routes[0].candidate = Some(SavedCandidate {
            backend: Backend {
                slot: Slot::Blue,
                release: "r8".into(),
                addr: "127.0.0.1:9001".parse().unwrap(),
            },
            percent: 10,
        });
        save(dir.path(), &routes).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(routes.clone()));
        let json = serde_json::to_value(&routes).unwrap();
        assert_eq!(json["routes"][0]["candidate"]["percent"], 10);
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
    }

    #[test]
    fn corrupt_routes_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ROUTES_FILE), b"{ not json").unwrap();
        let err = load(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(ROUTES_FILE), "{msg}");
        assert!(msg.contains("remove it"), "{msg}");
    }
}
