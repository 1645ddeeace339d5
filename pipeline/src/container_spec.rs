//! Pure builder: a service, a slot and a release → the container the local platform creates.
//!
//! Nothing here talks to Docker, so the exact output is pinned by snapshot tests. The local
//! platform takes the built value and hands it to the engine.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use crate::Slot;
use crate::config::Service;

/// Label keys shipit puts on every container it manages; the local platform finds its
/// containers by them, never by name alone.
pub const LABEL_MANAGED: &str = "shipit.managed";
/// The project id ([`crate::config::Config::project`]): a container without ours is never
/// touched.
pub const LABEL_PROJECT: &str = "shipit.project";
pub const LABEL_SERVICE: &str = "shipit.service";
pub const LABEL_TARGET: &str = "shipit.target";
pub const LABEL_SLOT: &str = "shipit.slot";
pub const LABEL_RELEASE: &str = "shipit.release";
pub const LABEL_VERSION: &str = "shipit.version";

/// Candidates run without a restart policy, so a crash during verification is seen at once
/// instead of being hidden by restarts. Once live, the container gets [`LIVE_RESTART_POLICY`].
pub const CANDIDATE_RESTART_POLICY: RestartPolicyNameEnum = RestartPolicyNameEnum::NO;
/// The restart policy of a live container: it survives crashes and engine restarts.
pub const LIVE_RESTART_POLICY: RestartPolicyNameEnum = RestartPolicyNameEnum::UNLESS_STOPPED;
/// Container ports are published on loopback only: traffic reaches them through the edge.
pub const PUBLISH_HOST_IP: &str = "127.0.0.1";

/// What to run in a slot.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The project id the container's name and labels carry.
    pub project: &'a str,
    pub service: &'a Service,
    pub target: &'a str,
    pub slot: Slot,
    pub release: &'a str,
    /// The image reference to run (an id or a tag).
    pub image: &'a str,
    /// The app version (the git revision) reported as `SHIPIT_VERSION`.
    pub version: &'a str,
    pub stop_timeout: std::time::Duration,
    /// The loopback port the container is published on, chosen by shipit at launch and fixed
    /// in the container's port binding, so the engine restarts the container on the same
    /// address the edge routes to.
    pub host_port: u16,
}

/// A container to create: its name and the engine's create body.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerSpec {
    pub name: String,
    pub body: ContainerCreateBody,
}

/// The container name of a service's slot on a target in a project. One per slot, so a
/// stale candidate left by a crash is found and replaced rather than duplicated; the project
/// id keeps two projects releasing a service of the same name apart.
pub fn container_name(project: &str, service: &str, target: &str, slot: Slot) -> String {
    format!("shipit-{project}-{target}-{service}-{slot}")
}

/// The name an earlier shipit, before project ids, gave the same slot. Such a container is
/// not ours: it is only named in warnings and hints, never touched.
pub fn legacy_container_name(service: &str, target: &str, slot: Slot) -> String {
    format!("shipit-{target}-{service}-{slot}")
}

/// The environment of a slot's container: the configured env, then shipit's own variables,
/// which win over configured ones of the same name.
pub fn container_env(launch: &Launch<'_>) -> Vec<String> {
    let mut env: Vec<String> = launch
        .service
        .env
        .iter()
        .filter(|(k, _)| !is_reserved_env(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("PORT={}", launch.service.port));
    env.push(format!("SHIPIT_RELEASE={}", launch.release));
    env.push(format!("SHIPIT_SLOT={}", launch.slot));
    env.push(format!("SHIPIT_VERSION={}", launch.version));
    env
}

/// Variables shipit sets itself; a configured value for them is ignored.
pub fn is_reserved_env(name: &str) -> bool {
    matches!(
        name,
        "PORT" | "SHIPIT_RELEASE" | "SHIPIT_SLOT" | "SHIPIT_VERSION"
    )
}

pub fn container_labels(launch: &Launch<'_>) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_PROJECT.to_string(), launch.project.to_string()),
        (LABEL_SERVICE.to_string(), launch.service.name.clone()),
        (LABEL_TARGET.to_string(), launch.target.to_string()),
        (LABEL_SLOT.to_string(), launch.slot.to_string()),
        (LABEL_RELEASE.to_string(), launch.release.to_string()),
        (LABEL_VERSION.to_string(), launch.version.to_string()),
    ])
}

/// The port key the engine uses for the service's container port.
pub fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

pub fn container_spec(launch: &Launch<'_>) -> ContainerSpec {
    let port = port_key(launch.service.port);
    let bindings = HashMap::from([(
        port.clone(),
        Some(vec![PortBinding {
            host_ip: Some(PUBLISH_HOST_IP.to_string()),
            // Fixed, not left to the engine: a container the engine restarts keeps it.
            host_port: Some(launch.host_port.to_string()),
        }]),
    )]);
    let body = ContainerCreateBody {
        image: Some(launch.image.to_string()),
        env: Some(container_env(launch)),
        labels: Some(container_labels(launch)),
        exposed_ports: Some(vec![port]),
        stop_timeout: Some(launch.stop_timeout.as_secs().max(1) as i64),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(CANDIDATE_RESTART_POLICY),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    ContainerSpec {
        name: container_name(
            launch.project,
            &launch.service.name,
            launch.target,
            launch.slot,
        ),
        body,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::{HealthCheck, Verify};

    fn service() -> Service {
        Service {
            name: "hello".into(),
            context: PathBuf::from("/src/hello"),
            dockerfile: PathBuf::from("Dockerfile"),
            port: 8080,
            env: BTreeMap::from([
                ("HELLO_HEALTH".to_string(), "ok".to_string()),
                ("PORT".to_string(), "1".to_string()),
            ]),
            env_file: None,
            secrets: BTreeMap::new(),
            pre_build: None,
            health: HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_millis(100),
                timeout: Duration::from_secs(30),
                healthy_threshold: 2,
            },
            verify: Verify {
                version_path: Some("/version".into()),
            },
            hooks: crate::config::Hooks::default(),
            warmup: None,
            route: crate::config::Route::default(),
        }
    }

    fn launch(service: &Service) -> Launch<'_> {
        Launch {
            project: "shop",
            service,
            target: "local",
            slot: Slot::Green,
            release: "20261122-101500-a1b2",
            image: "hello:1a2b3c4",
            version: "1a2b3c4",
            stop_timeout: Duration::from_secs(10),
            host_port: 41234,
        }
    }

    #[test]
    fn container_spec_for_green_slot() {
        let service = service();
        let spec = container_spec(&launch(&service));
        insta::assert_json_snapshot!(spec, {
            ".body.Labels" => insta::sorted_redaction(),
            ".body.ExposedPorts" => insta::sorted_redaction(),
        });
    }

    #[test]
    fn shipit_env_wins_over_configured_env() {
        let service = service();
        let env = container_env(&launch(&service));
        assert!(env.contains(&"PORT=8080".to_string()), "{env:?}");
        assert!(!env.contains(&"PORT=1".to_string()), "{env:?}");
        assert!(env.contains(&"HELLO_HEALTH=ok".to_string()), "{env:?}");
        assert!(env.contains(&"SHIPIT_SLOT=green".to_string()), "{env:?}");
    }

    #[test]
    fn name_and_labels_carry_the_project() {
        let service = service();
        let spec = container_spec(&launch(&service));
        assert_eq!(spec.name, "shipit-shop-local-hello-green");
        let labels = spec.body.labels.unwrap();
        assert_eq!(labels.get(LABEL_PROJECT).map(String::as_str), Some("shop"));
        assert_ne!(
            spec.name,
            legacy_container_name("hello", "local", Slot::Green),
            "a container of an earlier shipit never has the name of one of ours"
        );
    }

    #[test]
    fn port_is_published_on_the_port_chosen_at_launch() {
        let service = service();
        let spec = container_spec(&launch(&service));
        let bindings = spec.body.host_config.unwrap().port_bindings.unwrap();
        let ports: Vec<_> = bindings
            .values()
            .flatten()
            .flatten()
            .map(|b| b.host_port.clone())
            .collect();
        assert_eq!(ports, [Some("41234".to_string())]);
    }

    #[test]
    fn port_is_published_on_loopback_only() {
        let service = service();
        let spec = container_spec(&launch(&service));
        let bindings = spec.body.host_config.unwrap().port_bindings.unwrap();
        for binding in bindings.values().flatten().flatten() {
            assert_eq!(binding.host_ip.as_deref(), Some(PUBLISH_HOST_IP));
        }
    }
}
