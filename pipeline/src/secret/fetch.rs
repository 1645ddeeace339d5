//! Reading a service's `secrets` from AWS at a local launch, so that one config serves an
//! ecs target (where ECS reads them at task start) and a local one. The values go into the
//! container's environment and into what every output hides ([`remember`]); they are
//! never written to a record.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::RwLock;

use aws_smithy_types::error::display::DisplayErrorContext;

use super::{SecretArn, SecretStore, Secrets};

/// A secret that could not be read: which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    pub name: String,
    pub arn: String,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read the secret {} ({}): {}",
            self.name, self.arn, self.message
        )
    }
}

/// The values of `secrets`, by name, read with the SDK's standard credentials (in each
/// ARN's region).
pub async fn fetch(
    secrets: &BTreeMap<String, SecretArn>,
) -> Result<BTreeMap<String, String>, SecretError> {
    let mut configs: HashMap<String, aws_types::SdkConfig> = HashMap::new();
    let mut values = BTreeMap::new();
    for (name, arn) in secrets {
        if !configs.contains_key(&arn.region) {
            configs.insert(
                arn.region.clone(),
                crate::aws::sdk_config(&arn.region).await,
            );
        }
        let config = &configs[&arn.region];
        let failed = |message: String, hint: &str| SecretError {
            name: name.clone(),
            arn: arn.arn.clone(),
            message,
            hint: hint.to_string(),
        };
        let value = match arn.store {
            SecretStore::Ssm => {
                let out = aws_sdk_ssm::Client::new(config)
                    .get_parameter()
                    .name(&arn.id)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            format!("GetParameter failed: {}", DisplayErrorContext(&e)),
                            "check that the parameter exists and that the credentials allow \
                             ssm:GetParameter on it (and kms:Decrypt for a SecureString)",
                        )
                    })?;
                out.parameter()
                    .and_then(|p| p.value())
                    .unwrap_or_default()
                    .to_string()
            }
            SecretStore::SecretsManager => {
                let out = aws_sdk_secretsmanager::Client::new(config)
                    .get_secret_value()
                    .secret_id(&arn.id)
                    .set_version_stage(arn.version_stage.clone())
                    .set_version_id(arn.version_id.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        failed(
                            format!("GetSecretValue failed: {}", DisplayErrorContext(&e)),
                            "check that the secret exists and that the credentials allow \
                             secretsmanager:GetSecretValue on it",
                        )
                    })?;
                let text = out.secret_string().ok_or_else(|| {
                    failed(
                        "the secret holds binary data, not text".into(),
                        "an environment variable takes a text secret",
                    )
                })?;
                match &arn.json_key {
                    None => text.to_string(),
                    Some(key) => json_field(text, key).map_err(|m| {
                        failed(
                            m,
                            "the ARN's JSON key names a field of the secret's JSON text",
                        )
                    })?,
                }
            }
        };
        values.insert(name.clone(), value);
    }
    remember(values.iter().map(|(n, v)| (n.clone(), v.clone())));
    Ok(values)
}

/// The field `key` of the JSON object `text`, as text.
fn json_field(text: &str, key: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|_| "the secret is not a JSON object".to_string())?;
    match doc.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!("the field {key:?} is not text")),
        None => Err(format!("the secret's JSON has no field {key:?}")),
    }
}

/// The values read from AWS by this process, hidden in every output whatever the flags.
static RESOLVED: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Adds `pairs` (name, value) to what [`resolved`] hides.
pub fn remember(pairs: impl IntoIterator<Item = (String, String)>) {
    let mut resolved = RESOLVED.write().unwrap_or_else(|e| e.into_inner());
    resolved.extend(pairs);
}

/// The secret values this process read from AWS, to hide in free text.
pub fn resolved() -> Secrets {
    Secrets::new(
        RESOLVED
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_key_picks_one_field() {
        let text = r#"{"user":"app","password":"s3cret","port":5432}"#;
        assert_eq!(json_field(text, "password").unwrap(), "s3cret");
        assert_eq!(json_field(text, "port").unwrap(), "5432");
        assert!(json_field(text, "host").unwrap_err().contains("no field"));
        assert!(
            json_field("plain", "x")
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn remembered_values_are_hidden() {
        remember([("API_TOKEN".to_string(), "remembered-value-9".to_string())]);
        assert_eq!(
            resolved().scrub("token remembered-value-9 used"),
            "token <redacted> used"
        );
    }
}
