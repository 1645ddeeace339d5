//! The CloudFront swap: one distribution in front of both slots, one origin domain per slot.
//!
//! The live slot is the one whose origin domain (from the `cdn.origins` key) the origin of
//! the default cache behaviour points at. A swap changes that origin's `DomainName` — not
//! the behaviour's `TargetOriginId` — so the distribution keeps one origin and its settings
//! (timeouts, headers, origin access) whichever slot serves, and only the domain moves.
//! The update is a read-modify-write: GetDistributionConfig gives the config and its ETag,
//! UpdateDistribution sends it back with `IfMatch`, and a `PreconditionFailed` (someone
//! changed the distribution in between) starts over, a bounded number of times. The
//! platform reads the origin's domain now with `EcsPlatform::cdn_origin`.

use aws_sdk_cloudfront::types::DistributionConfig;

use super::EcsPlatform;
use super::aws::aws_error;
use crate::Slot;
use crate::config::PerSlot;
use crate::platform::{ErrorKind, PlatformError};

/// How many times a swap reads and writes again after a precondition failure.
pub const MAX_UPDATE_ATTEMPTS: usize = 5;

/// The origin the default cache behaviour sends requests to: its id and domain.
pub fn target_origin(config: &DistributionConfig) -> Result<(String, String), String> {
    let behaviour = config
        .default_cache_behavior
        .as_ref()
        .ok_or("it has no default cache behaviour")?;
    let id = &behaviour.target_origin_id;
    let origin = config
        .origins
        .as_ref()
        .and_then(|o| o.items.iter().find(|origin| origin.id == *id))
        .ok_or_else(|| {
            format!("its default cache behaviour targets origin {id:?}, which it does not list")
        })?;
    Ok((id.clone(), origin.domain_name.clone()))
}

/// The slot whose origin domain `domain` is.
pub fn slot_of(domain: &str, origins: &PerSlot<String>) -> Option<Slot> {
    origins.slot_of(|d| d.eq_ignore_ascii_case(domain))
}

/// `config` with the target origin's domain set to `domain`. Returns whether anything
/// changed.
pub fn point_at(config: &mut DistributionConfig, domain: &str) -> Result<bool, String> {
    let (id, current) = target_origin(config)?;
    if current.eq_ignore_ascii_case(domain) {
        return Ok(false);
    }
    if let Some(origins) = config.origins.as_mut() {
        for origin in origins.items.iter_mut().filter(|o| o.id == id) {
            origin.domain_name = domain.to_string();
        }
    }
    Ok(true)
}

/// The distribution's config and its ETag (the `IfMatch` of an update).
pub async fn read_config(
    cloudfront: &aws_sdk_cloudfront::Client,
    id: &str,
) -> Result<(DistributionConfig, String), PlatformError> {
    let out = cloudfront
        .get_distribution_config()
        .id(id)
        .send()
        .await
        .map_err(|e| aws_error("GetDistributionConfig", id, &e))?;
    let etag = out.e_tag().unwrap_or_default().to_string();
    let config = out.distribution_config.ok_or_else(|| {
        PlatformError::new(
            ErrorKind::Platform,
            format!("cloudfront: distribution {id} has no config"),
        )
    })?;
    Ok((config, etag))
}

impl EcsPlatform {
    /// The domain the distribution's target origin has now.
    pub(super) async fn cdn_origin(&self) -> Result<Option<String>, PlatformError> {
        let Some(cdn) = &self.target.cdn else {
            return Ok(None);
        };
        let id = &cdn.distribution_id;
        let (config, _) = read_config(&self.clients.cloudfront, id).await?;
        let (_, domain) = target_origin(&config).map_err(|e| {
            PlatformError::new(
                ErrorKind::Platform,
                format!("cloudfront: distribution {id}: {e}"),
            )
        })?;
        Ok(Some(domain))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudfront::types::{DefaultCacheBehavior, Origin, Origins, ViewerProtocolPolicy};

    use super::*;

    fn config(target: &str) -> DistributionConfig {
        let origin = |id: &str, domain: &str| {
            Origin::builder()
                .id(id)
                .domain_name(domain)
                .build()
                .expect("origin")
        };
        DistributionConfig::builder()
            .caller_reference("r")
            .comment("")
            .enabled(true)
            .origins(
                Origins::builder()
                    .quantity(2)
                    .items(origin("app", "blue.example.com"))
                    .items(origin("static", "assets.example.com"))
                    .build()
                    .expect("origins"),
            )
            .default_cache_behavior(
                DefaultCacheBehavior::builder()
                    .target_origin_id(target)
                    .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
                    .build()
                    .expect("behaviour"),
            )
            .build()
            .expect("config")
    }

    fn origins() -> PerSlot<String> {
        PerSlot {
            blue: "blue.example.com".into(),
            green: "green.example.com".into(),
        }
    }

    #[test]
    fn live_slot_is_read_from_the_target_origin_domain() {
        let (id, domain) = target_origin(&config("app")).expect("target origin");
        assert_eq!((id.as_str(), domain.as_str()), ("app", "blue.example.com"));
        assert_eq!(slot_of(&domain, &origins()), Some(Slot::Blue));
        assert_eq!(slot_of("BLUE.example.com", &origins()), Some(Slot::Blue));
        assert_eq!(slot_of("other.example.com", &origins()), None);
    }

    #[test]
    fn swap_changes_only_the_target_origin_domain() {
        let mut swapped = config("app");
        assert!(point_at(&mut swapped, "green.example.com").expect("swaps"));
        let items = &swapped.origins.as_ref().expect("origins").items;
        assert_eq!(items[0].domain_name, "green.example.com");
        assert_eq!(items[1].domain_name, "assets.example.com");
        assert_eq!(
            swapped
                .default_cache_behavior
                .as_ref()
                .map(|b| b.target_origin_id.as_str()),
            Some("app")
        );
        assert!(!point_at(&mut swapped, "green.example.com").expect("no change"));
    }

    #[test]
    fn missing_target_origin_is_an_error() {
        let error = target_origin(&config("gone")).expect_err("no such origin");
        assert!(error.contains("\"gone\""), "{error}");
    }
}
