//! A service's images on a local target: which stay on the engine, and removing the others
//! after a successful release, so a busy service does not fill the disk.
//!
//! Every record names the image its release ran (`image_id`). A service keeps the newest
//! `keep_images` images that went live (or were staged), in the order of the records that
//! used them, and always the live release's image, the image `shipit rollback` would bring
//! back, and any image a container of the service was made from (the engine refuses to
//! remove those anyway). The rest are removed, but only images this history names and that
//! carry shipit's labels for this service: the engine's other images, another service's, or
//! those of another state directory's service of the same name are never touched.
//!
//! Removing is an untag of the service's own tags (the engine deletes an image with its last
//! tag, and its build's untagged parent layers with it), or a plain delete of an untagged
//! image; never forced, so an image a container still uses stays. A failure is a warning: the
//! release it follows is live whatever happens here.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::query_parameters::{ListContainersOptions, RemoveImageOptions};

use super::LocalPlatform;
use super::container::docker_error;
use crate::build::{CONTEXT_HASH_LABEL, SERVICE_LABEL};
use crate::event::{Phase, Reporter};
use crate::history::{HistoryStore, Outcome, ReleaseRecord};
use crate::platform::{ErrorKind, Platform, PlatformError};

/// What the history says about a service's images: the ones to keep, and the others it
/// names, each with the newest release that ran it (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Retention {
    pub keep: BTreeSet<String>,
    pub prune: BTreeMap<String, String>,
}

/// Decides which image ids stay: the newest `keep` distinct images among the releases that
/// went live or were staged (`records` newest first, as the history lists them), the image of
/// `live` and of the release `shipit rollback` would restore (the one live before `live`),
/// and `in_use`. Every other image a record names is to be pruned.
pub fn retention(
    records: &[ReleaseRecord],
    live: Option<&str>,
    keep: usize,
    in_use: &BTreeSet<String>,
) -> Retention {
    let image_of = |id: &str| {
        records
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.image_id.clone())
    };
    let mut kept: BTreeSet<String> = in_use.clone();
    if let Some(live) = live {
        kept.extend(image_of(live));
        let previous = records
            .iter()
            .find(|r| r.id == live)
            .and_then(|r| r.previous.as_deref());
        kept.extend(previous.and_then(image_of));
    }
    let mut newest = Vec::new();
    for r in records {
        if newest.len() >= keep {
            break;
        }
        if !matches!(r.outcome, Outcome::Succeeded | Outcome::Staged { .. }) {
            continue;
        }
        if let Some(id) = &r.image_id
            && !newest.contains(id)
        {
            newest.push(id.clone());
        }
    }
    kept.extend(newest);
    let mut prune = BTreeMap::new();
    for r in records {
        if let Some(id) = &r.image_id
            && !kept.contains(id)
        {
            prune.entry(id.clone()).or_insert_with(|| r.serves.clone());
        }
    }
    Retention { keep: kept, prune }
}

/// The repository of an image reference: `hello` of `hello:1a2b3c4`, and
/// `127.0.0.1:5000/x/hello` of `127.0.0.1:5000/x/hello:1a2b3c4` (a colon in the registry's
/// host is not the tag's).
pub fn repository(reference: &str) -> &str {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].find(':') {
        Some(i) => &reference[..name_start + i],
        None => reference,
    }
}

/// How pruning one image ended.
enum Removal {
    Removed,
    /// Not there any more (removed by hand, or by another run).
    Gone,
    /// Left alone, and why.
    Left(String),
}

impl LocalPlatform {
    /// Removes the service's images past `keep_images` (see the module's notes). Failures to
    /// remove one image are warnings; Err only when the history or the engine cannot be read.
    pub(super) async fn prune_images(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        let records = self.history.list().await.map_err(|e| {
            PlatformError::new(ErrorKind::Platform, format!("reading the history: {e}"))
                .with_hint_of(e.hint())
        })?;
        let live = self.live().await?;
        let in_use = self.images_in_use().await?;
        let keep = usize::try_from(self.target.keep_images).unwrap_or(usize::MAX);
        let retention = retention(
            &records,
            live.as_ref().map(|l| l.release.as_str()),
            keep,
            &in_use,
        );
        // The repositories this history tagged its images in: only those tags are ours.
        let ours: BTreeSet<&str> = records
            .iter()
            .filter_map(|r| r.image.as_deref())
            .map(repository)
            .collect();
        let mut removed = Vec::new();
        for (image, release) in &retention.prune {
            match self.remove_image(image, &ours).await {
                Removal::Removed => removed.push(short(image)),
                Removal::Gone => {}
                Removal::Left(why) => reporter.warn(format!(
                    "kept image {} of release {release}: {why}",
                    short(image)
                )),
            }
        }
        if !removed.is_empty() {
            reporter.progress(
                Phase::Record,
                format!(
                    "removed {} older image{} of {} ({}); keeping {} (keep_images = {})",
                    removed.len(),
                    if removed.len() == 1 { "" } else { "s" },
                    self.service.name,
                    removed.join(", "),
                    retention.keep.len(),
                    self.target.keep_images
                ),
            );
        }
        Ok(())
    }

    /// Which of `image_ids` are still on the engine.
    pub(super) async fn images_present(
        &self,
        image_ids: impl IntoIterator<Item = &str>,
    ) -> Result<BTreeSet<String>, PlatformError> {
        let mut present = BTreeSet::new();
        for id in image_ids {
            match self.docker.inspect_image(id).await {
                Ok(_) => {
                    present.insert(id.to_string());
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(docker_error(&format!("inspecting image {id}"), e)),
            }
        }
        Ok(present)
    }

    /// The images the service's containers (on any target of this engine, in any state) were
    /// made from.
    async fn images_in_use(&self) -> Result<BTreeSet<String>, PlatformError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{SERVICE_LABEL}={}", self.service.name)],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("listing the service's containers", e))?;
        Ok(containers.into_iter().filter_map(|c| c.image_id).collect())
    }

    /// Removes one image the history names, if it is this service's: its tags in `ours`
    /// first, then the image itself when no tag is left.
    async fn remove_image(&self, image: &str, ours: &BTreeSet<&str>) -> Removal {
        let info = match self.docker.inspect_image(image).await {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Removal::Gone,
            Err(e) => return Removal::Left(format!("inspecting it failed: {e}")),
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if labels.get(SERVICE_LABEL) != Some(&self.service.name)
            || !labels.contains_key(CONTEXT_HASH_LABEL)
        {
            return Removal::Left(format!(
                "it does not carry shipit's labels for {} ({SERVICE_LABEL}, {CONTEXT_HASH_LABEL})",
                self.service.name
            ));
        }
        let tags = info.repo_tags.unwrap_or_default();
        let (mine, others): (Vec<&String>, Vec<&String>) = tags
            .iter()
            .partition(|t| ours.contains(repository(t.as_str())));
        if !others.is_empty() {
            let others: Vec<&str> = others.iter().map(|t| t.as_str()).collect();
            return Removal::Left(format!("it is also tagged {}", others.join(", ")));
        }
        // Untagging the last tag deletes the image; an untagged image is deleted by id.
        let references: Vec<&str> = if mine.is_empty() {
            vec![image]
        } else {
            mine.iter().map(|t| t.as_str()).collect()
        };
        for reference in references {
            match self
                .docker
                .remove_image(reference, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_) => {}
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Removal::Left(format!("removing {reference} failed: {e}")),
            }
        }
        Removal::Removed
    }
}

/// An image id as `docker images` shows it.
fn short(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}
