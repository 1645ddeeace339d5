//! The image a service's last build gave, kept beside its stat cache.
//!
//! Deciding "reuse" asks the engine for an image with the context's hash. A labelled list is
//! a scan of every image on the engine, so its cost grows with the engine, not the context: on
//! an engine with a few hundred images it took about 80 ms, more than the whole 50 ms budget
//! of an unchanged decision. The record names the one image to look at; one inspect settles
//! it. The record is only a hint: an image it names is reused only if its own labels carry the
//! hash, the service and the module versions asked for, and a record that is missing, damaged,
//! for another hash or naming an image that is gone sends the lookup back to the list.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use bollard::Docker;
use serde::{Deserialize, Serialize};

use super::BuildRequest;

/// Bumped whenever the record's meaning changes; other versions are ignored.
const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    format: u32,
    context_hash: String,
    id: String,
}

/// An image that may be reused, as the lookup found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    pub(super) id: String,
    pub(super) repo_tags: Vec<String>,
}

/// Where `req`'s record lives, when it has a cache folder.
pub(super) fn path(req: &BuildRequest) -> Option<PathBuf> {
    req.cache_dir
        .as_ref()
        .map(|dir| dir.join(format!("image-{}.json", super::safe_name(&req.service))))
}

/// The recorded image, if there is one for `hash` and it still qualifies for `req`: its labels
/// hold `hash`, `req`'s service and `req`'s module labels, as a listed one must.
pub(super) async fn recorded(docker: &Docker, req: &BuildRequest, hash: &str) -> Option<Candidate> {
    let path = path(req)?;
    let record = read(&path)?;
    if record.context_hash != hash {
        return None;
    }
    let image = match docker.inspect_image(&record.id).await {
        Ok(image) => image,
        Err(e) => {
            // Gone (pruned, removed by hand) or unreadable: the list decides.
            tracing::debug!(record = %path.display(), id = %record.id, error = %e,
                "the recorded image is not usable; listing images instead");
            return None;
        }
    };
    let labels: BTreeMap<String, String> = image
        .config
        .and_then(|config| config.labels)
        .map(|labels| labels.into_iter().collect())
        .unwrap_or_default();
    let wanted = super::module_labels(req.labels.iter());
    let qualifies = labels.get(super::CONTEXT_HASH_LABEL).map(String::as_str) == Some(hash)
        && labels.get(super::SERVICE_LABEL) == Some(&req.service)
        && super::module_labels(labels.iter()) == wanted;
    let id = image.id.filter(|id| *id == record.id)?;
    qualifies.then(|| Candidate {
        id,
        repo_tags: image.repo_tags.unwrap_or_default(),
    })
}

/// Records `id` as the image `req`'s context with `hash` gave. A record that cannot be
/// written only costs the next decision a list.
pub(super) fn store(req: &BuildRequest, hash: &str, id: &str) {
    let Some(path) = path(req) else {
        return;
    };
    let record = Record {
        format: FORMAT,
        context_hash: hash.to_string(),
        id: id.to_string(),
    };
    if let Err(e) = write(&path, &record) {
        tracing::warn!(record = %path.display(), error = %e,
            "could not record the image built; the next decision lists the engine's images");
    }
}

fn read(path: &Path) -> Option<Record> {
    crate::state_dir::read_hint::<Record>(path, "image record").filter(|r| r.format == FORMAT)
}

/// Replaces the record atomically (see [`crate::state_dir::replace_private_file`]).
fn write(path: &Path, record: &Record) -> io::Result<()> {
    crate::state_dir::replace_private_file(path, |file| Ok(serde_json::to_writer(file, record)?))
}
