//! Pure builder: an ecs target, a service, a slot and a release → the ECS task definition to
//! register.
//!
//! The task definition is a handlebars template (`templates/ecs-task-definition.json.hbs`
//! by default, or the target's `task_definition` file) rendered with JSON escaping, parsed
//! into [`TaskDefinition`] — the subset of RegisterTaskDefinition that shipit passes on —
//! and checked: the container the load balancer routes to must be there with the service's
//! port. A field outside that subset is an error naming it, never silently dropped. Nothing
//! here talks to AWS, so the output is pinned by snapshot tests; the ecs platform sends it.

use std::collections::{BTreeMap, BTreeSet};

use handlebars::Handlebars;
use serde::{Deserialize, Serialize};

use crate::Slot;
use crate::config::{EcsTarget, REDACTED, Service};
use crate::container_spec::is_reserved_env;
use crate::secret::Secrets;

/// Tag keys shipit puts on task definitions (and services) it registers; the live release
/// is read back from [`TAG_RELEASE`].
pub const TAG_RELEASE: &str = "shipit.release";
pub const TAG_SERVICE: &str = "shipit.service";
pub const TAG_TARGET: &str = "shipit.target";
pub const TAG_SLOT: &str = "shipit.slot";

/// What a task definition is rendered from.
#[derive(Debug, Clone)]
pub struct Render<'a> {
    pub target_name: &'a str,
    pub target: &'a EcsTarget,
    pub service: &'a Service,
    pub slot: Slot,
    pub release: &'a str,
    /// The app version (git revision), reported as `SHIPIT_VERSION`.
    pub version: &'a str,
    /// The image reference the tasks run (`<repository>@sha256:…` after a push).
    pub image: &'a str,
}

/// The task definition family of a service on an ecs target: one per cluster and service,
/// shared by both slots (each release registers a new revision).
pub fn family(target: &EcsTarget, service: &str) -> String {
    format!("{}-{service}", target.cluster)
}

/// The name of the container the load balancer routes to: the service's name.
pub fn container_name(service: &Service) -> String {
    service.name.clone()
}

/// The values the template sees.
#[derive(Debug, Serialize)]
struct Context<'a> {
    family: String,
    container: String,
    image: &'a str,
    port: u16,
    cpu: u32,
    memory: u32,
    log_group: String,
    region: &'a str,
    release: &'a str,
    version: &'a str,
    service: &'a str,
    target: &'a str,
    slot: Slot,
    execution_role_arn: &'a str,
    env: BTreeMap<String, String>,
    /// The service's `secrets`: name → ARN, for the container's `secrets` (`valueFrom`).
    secrets: BTreeMap<String, String>,
}

/// The environment of the container: the service's env, then shipit's own variables, which
/// win over configured ones of the same name (as on a local target).
pub fn environment(render: &Render<'_>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = render
        .service
        .env
        .iter()
        .filter(|(k, _)| !is_reserved_env(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.insert("PORT".into(), render.service.port.to_string());
    env.insert("SHIPIT_RELEASE".into(), render.release.to_string());
    env.insert("SHIPIT_SLOT".into(), render.slot.to_string());
    env.insert("SHIPIT_VERSION".into(), render.version.to_string());
    env
}

/// Replaces the values of the variables named in `hidden` in every container's environment
/// with [`REDACTED`]: what a printout of the definition shows (`shipit plan`). The definition
/// registered is never redacted.
pub fn redact_env(definition: &mut TaskDefinition, hidden: &BTreeSet<String>) {
    for container in &mut definition.container_definitions {
        for variable in &mut container.environment {
            if hidden.contains(&variable.name) {
                variable.value = REDACTED.to_string();
            }
        }
    }
}

/// `text` with the values of the service's own env hidden: for a message that quotes
/// rendered text.
fn scrub(text: &str, service: &Service) -> String {
    let secrets = service
        .env
        .iter()
        .filter(|(name, _)| !is_reserved_env(name))
        .map(|(name, value)| (name.clone(), value.clone()));
    Secrets::new(secrets).scrub(text).into_owned()
}

/// A rendered task definition: the fields of RegisterTaskDefinition shipit supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinition {
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_compatibilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<NumberText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<NumberText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<RuntimePlatform>,
    pub container_definitions: Vec<ContainerDefinition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<NameValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub value_from: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfiguration {
    pub log_driver: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimePlatform {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system_family: Option<String>,
}

/// A task-level `cpu` or `memory`: AWS takes text ("256", "1 vCPU"); a template may write a
/// number too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberText {
    Number(u64),
    Text(String),
}

impl NumberText {
    pub fn text(&self) -> String {
        match self {
            NumberText::Number(n) => n.to_string(),
            NumberText::Text(t) => t.clone(),
        }
    }
}

impl TaskDefinition {
    /// The container named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// The image of the container named `name`.
    pub fn image_of(&self, name: &str) -> Option<&str> {
        self.container(name).map(|c| c.image.as_str())
    }
}

/// A template that did not render into a task definition shipit can register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task definition template {template}: {message}")]
pub struct TaskDefinitionError {
    /// The template's path, or `built-in templates/ecs-task-definition.json.hbs`.
    pub template: String,
    pub message: String,
    hint: Option<String>,
}

impl TaskDefinitionError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// Renders `template` (named `template_name` in messages) for `render`.
pub fn render(
    template_name: &str,
    template: &str,
    render: &Render<'_>,
) -> Result<TaskDefinition, TaskDefinitionError> {
    let error = |message: String, hint: Option<&str>| TaskDefinitionError {
        template: template_name.to_string(),
        message,
        hint: hint.map(str::to_string),
    };
    let container = container_name(render.service);
    let context = Context {
        family: family(render.target, &render.service.name),
        container: container.clone(),
        image: render.image,
        port: render.service.port,
        cpu: render.target.cpu,
        memory: render.target.memory,
        log_group: render.target.log_group_for(&render.service.name),
        region: &render.target.region,
        release: render.release,
        version: render.version,
        service: &render.service.name,
        target: render.target_name,
        slot: render.slot,
        execution_role_arn: render.target.execution_role_arn.as_deref().unwrap_or(""),
        env: environment(render),
        secrets: render
            .service
            .secrets
            .iter()
            .map(|(name, arn)| (name.clone(), arn.arn.clone()))
            .collect(),
    };

    let mut engine = Handlebars::new();
    engine.set_strict_mode(true);
    engine.register_escape_fn(escape_json);
    let text = engine.render_template(template, &context).map_err(|e| {
        error(
            e.to_string(),
            Some("the values a template may use are listed at the top of the built-in template"),
        )
    })?;

    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
        error(
            format!(
                "renders to invalid JSON at line {} column {}: {e}\n  {}",
                e.line(),
                e.column(),
                scrub(line.trim(), render.service)
            ),
            Some("values are JSON-escaped: write string values inside quotes, numbers without"),
        )
    })?;
    let definition: TaskDefinition = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        error(
            format!(
                "at `{path}`: {}",
                scrub(&e.inner().to_string(), render.service)
            ),
            Some(
                "shipit passes on family, taskRoleArn, executionRoleArn, networkMode, \
                 requiresCompatibilities, cpu, memory, runtimePlatform and, per container, \
                 name, image, essential, cpu, memory, memoryReservation, portMappings, \
                 environment, secrets, command, entryPoint, workingDirectory, user, \
                 stopTimeout and logConfiguration",
            ),
        )
    })?;

    let port = i32::from(render.service.port);
    match definition.container(&container) {
        None => {
            return Err(error(
                format!(
                    "has no container named {container:?}, the one the load balancer routes to"
                ),
                Some("name the service's container {{container}}"),
            ));
        }
        Some(c) if !c.port_mappings.iter().any(|p| p.container_port == port) => {
            return Err(error(
                format!(
                    "container {container:?} does not map the service's port {port}: the target \
                     group sends traffic there"
                ),
                Some("add { \"containerPort\": {{port}} } to its portMappings"),
            ));
        }
        Some(c) => {
            // A secret goes in `secrets`, by ARN: a template that drops one, or puts it in
            // the environment, would run the service without it or print its value.
            for (name, arn) in &render.service.secrets {
                if !c
                    .secrets
                    .iter()
                    .any(|s| s.name == *name && s.value_from == arn.arn)
                {
                    return Err(error(
                        format!(
                            "container {container:?} does not get the secret {name} ({arn}) \
                             in its secrets"
                        ),
                        Some(
                            "render {{#each secrets}} into the container's \"secrets\" as \
                             { \"name\": \"{{@key}}\", \"valueFrom\": \"{{this}}\" }, as the \
                             built-in template does",
                        ),
                    ));
                }
                if c.environment.iter().any(|v| v.name == *name) {
                    return Err(error(
                        format!(
                            "container {container:?} has the secret {name} in its environment:                              its value would be stored in the task definition"
                        ),
                        Some("secrets go in \"secrets\", by ARN, never in \"environment\""),
                    ));
                }
            }
        }
    }
    Ok(definition)
}

/// Escapes text for the inside of a JSON string.
fn escape_json(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

/// The tags of a task definition (and of the service running it).
pub fn tags(render: &Render<'_>) -> Vec<(String, String)> {
    vec![
        (TAG_RELEASE.to_string(), render.release.to_string()),
        (TAG_SERVICE.to_string(), render.service.name.clone()),
        (TAG_TARGET.to_string(), render.target_name.to_string()),
        (TAG_SLOT.to_string(), render.slot.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{Config, TargetKind};

    const CONFIG: &str = r#"
[services.hello]
port = 8080
env = { GREETING = "hi \"there\"", PORT = "1" }

[targets.aws]
kind = "ecs"
region = "us-east-1"
cluster = "prod"
listener_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2"
target_groups = { blue = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-blue/0123456789abcdef", green = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-green/fedcba9876543210" }
repository = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hello"
"#;

    fn config(extra: &str) -> Config {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::parse(
            &format!("{CONFIG}{extra}"),
            Path::new("shipit.toml"),
            &BTreeMap::<String, String>::new(),
            dir,
        )
        .unwrap_or_else(|e| panic!("config loads: {e}"))
    }

    fn ecs(config: &Config) -> &EcsTarget {
        match &config.targets["aws"].kind {
            TargetKind::Ecs(ecs) => ecs,
            other => panic!("expected an ecs target, got {other:?}"),
        }
    }

    fn rendered(config: &Config, template: &str) -> Result<TaskDefinition, TaskDefinitionError> {
        let service = &config.services["hello"];
        render(
            "test.json.hbs",
            template,
            &Render {
                target_name: "aws",
                target: ecs(config),
                service,
                slot: Slot::Green,
                release: "20261122-101500-a1b2",
                version: "1a2b3c4",
                image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/hello@sha256:0123",
            },
        )
    }

    fn built_in() -> &'static str {
        crate::config::DEFAULT_TASK_DEFINITION_TEXT
    }

    #[test]
    fn built_in_template_for_green_slot() {
        let config = config("");
        insta::assert_json_snapshot!(rendered(&config, built_in()).expect("renders"));
    }

    const SECRET_ARN: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db-password";

    #[test]
    fn secrets_go_into_the_containers_secrets_by_arn_never_into_its_environment() {
        let with_secret = config(&format!(
            "\n[services.hello.secrets]\nDB_PASSWORD = \"{SECRET_ARN}\"\n"
        ));
        let definition = rendered(&with_secret, built_in()).expect("renders");
        let container = definition.container("hello").unwrap();
        assert_eq!(
            container.secrets,
            [SecretRef {
                name: "DB_PASSWORD".into(),
                value_from: SECRET_ARN.into(),
            }]
        );
        assert!(
            container
                .environment
                .iter()
                .all(|v| v.name != "DB_PASSWORD")
        );
        // Without secrets, the built-in template renders no `secrets` at all.
        let plain = rendered(&config(""), built_in()).expect("renders");
        assert!(plain.container("hello").unwrap().secrets.is_empty());
    }

    #[test]
    fn a_template_that_drops_a_secret_or_puts_it_in_the_environment_is_refused() {
        let config = config(&format!(
            "\n[services.hello.secrets]\nDB_PASSWORD = \"{SECRET_ARN}\"\n"
        ));
        let dropped = r#"{"family": "{{family}}", "containerDefinitions": [{"name": "{{container}}",
            "image": "{{image}}", "portMappings": [{"containerPort": {{port}}}]}]}"#;
        let error = rendered(&config, dropped).unwrap_err().to_string();
        assert!(
            error.contains("does not get the secret DB_PASSWORD"),
            "{error}"
        );
        let leaked = r#"{"family": "{{family}}", "containerDefinitions": [{"name": "{{container}}",
            "image": "{{image}}", "portMappings": [{"containerPort": {{port}}}],
            "environment": [{"name": "DB_PASSWORD", "value": "x"}],
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": "{{secrets.DB_PASSWORD}}"}]}]}"#;
        let error = rendered(&config, leaked).unwrap_err().to_string();
        assert!(error.contains("in its environment"), "{error}");
    }

    #[test]
    fn built_in_template_with_execution_role_logs_to_cloudwatch() {
        let config = config(
            "execution_role_arn = \"arn:aws:iam::123456789012:role/ecsTaskExecutionRole\"\n\
             cpu = 512\nmemory = 1024\nlog_group = \"/apps/hello\"\n",
        );
        insta::assert_json_snapshot!(rendered(&config, built_in()).expect("renders"));
    }

    #[test]
    fn shipped_template_file_is_the_built_in_one() {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(crate::config::DEFAULT_TASK_DEFINITION);
        let text = std::fs::read_to_string(file).expect("the template ships in templates/");
        assert_eq!(text, built_in());
    }

    #[test]
    fn values_are_json_escaped() {
        let config = config("");
        let definition = rendered(&config, built_in()).expect("renders");
        let env = &definition
            .container("hello")
            .expect("container")
            .environment;
        let greeting = env.iter().find(|e| e.name == "GREETING").expect("GREETING");
        assert_eq!(greeting.value, "hi \"there\"");
        // shipit's own variables win over configured ones.
        let port = env.iter().find(|e| e.name == "PORT").expect("PORT");
        assert_eq!(port.value, "8080");
    }

    #[test]
    fn unknown_field_is_named() {
        let config = config("");
        let template = built_in().replace(
            "\"essential\": true,",
            "\"essential\": true, \"links\": [],",
        );
        let error = rendered(&config, &template).expect_err("links is not passed on");
        assert!(
            error.message.contains("containerDefinitions[0]") && error.message.contains("links"),
            "{error}"
        );
    }

    #[test]
    fn missing_container_or_port_is_refused() {
        let config = config("");
        let renamed = built_in().replace("\"name\": \"{{container}}\"", "\"name\": \"app\"");
        let error = rendered(&config, &renamed).expect_err("container renamed");
        assert!(
            error.message.contains("no container named \"hello\""),
            "{error}"
        );

        let moved = built_in().replace("\"containerPort\": {{port}}", "\"containerPort\": 9999");
        let error = rendered(&config, &moved).expect_err("port changed");
        assert!(error.message.contains("port 8080"), "{error}");
    }

    #[test]
    fn invalid_json_names_the_line() {
        let config = config("");
        let broken = built_in().replace("\"essential\": true,", "\"essential\": true");
        let error = rendered(&config, &broken).expect_err("missing comma");
        assert!(error.message.contains("invalid JSON at line"), "{error}");
        // The parser stops at the next line, which the message shows.
        assert!(error.message.contains("\"portMappings\": ["), "{error}");
    }

    #[test]
    fn unknown_value_in_template_is_an_error() {
        let config = config("");
        let error = rendered(&config, "{ \"family\": \"{{nope}}\" }").expect_err("strict");
        assert!(error.message.contains("nope"), "{error}");
    }

    #[test]
    fn errors_quoting_rendered_text_hide_env_values() {
        let config = config("");
        // The value lands where a number belongs, and on the line the JSON parser stops at.
        let numeric = built_in().replace(
            "\"essential\": true,",
            "\"essential\": true, \"stopTimeout\": \"{{env.GREETING}}\",",
        );
        let error = rendered(&config, &numeric).expect_err("a string is not a number");
        assert!(error.message.contains("stopTimeout"), "{error}");
        assert!(!error.message.contains("there"), "{error}");
        let broken = built_in().replace(
            "\"essential\": true,",
            "\"essential\": true, \"user\": \"{{env.GREETING}}\" \"x\": 1,",
        );
        let error = rendered(&config, &broken).expect_err("missing comma");
        assert!(error.message.contains("invalid JSON at line"), "{error}");
        assert!(error.message.contains(REDACTED), "{error}");
        assert!(!error.message.contains("there"), "{error}");
    }

    #[test]
    fn redacting_hides_the_named_values_and_keeps_shipits_own() {
        let config = config("");
        let mut definition = rendered(&config, built_in()).expect("renders");
        let hidden = config.services["hello"].hidden_env_names(false);
        assert_eq!(hidden, BTreeSet::from(["GREETING".to_string()]));
        redact_env(&mut definition, &hidden);
        let env = &definition
            .container("hello")
            .expect("container")
            .environment;
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .map(|e| e.value.as_str())
        };
        assert_eq!(value("GREETING"), Some(REDACTED));
        assert_eq!(value("PORT"), Some("8080"));
        assert_eq!(value("SHIPIT_SLOT"), Some("green"));
    }
}
