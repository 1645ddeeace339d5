//! A service's `secrets`: environment kept in AWS, named by ARN. An SSM parameter
//! (`arn:aws:ssm:<region>:<account>:parameter/<name>`) or a Secrets Manager secret
//! (`arn:aws:secretsmanager:<region>:<account>:secret:<name>`, optionally followed by
//! `:<json key>:<version stage>:<version id>` as ECS's `valueFrom` takes it).

use std::fmt;

/// Which AWS service keeps a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStore {
    Ssm,
    SecretsManager,
}

/// A parsed secret ARN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct SecretArn {
    /// The ARN as written: ECS's `valueFrom`.
    pub arn: String,
    #[serde(skip)]
    pub store: SecretStore,
    #[serde(skip)]
    pub region: String,
    /// The parameter's name (`/prod/db`), or the secret's id (its ARN up to the name).
    #[serde(skip)]
    pub id: String,
    /// A Secrets Manager secret's JSON key, when the value is one field of a JSON document.
    #[serde(skip)]
    pub json_key: Option<String>,
    /// A Secrets Manager version stage or id, when not the current one.
    #[serde(skip)]
    pub version_stage: Option<String>,
    #[serde(skip)]
    pub version_id: Option<String>,
}

impl From<SecretArn> for String {
    fn from(arn: SecretArn) -> String {
        arn.arn
    }
}

impl fmt::Display for SecretArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl SecretArn {
    /// Parses `arn`; the error says what is wrong with it.
    pub fn parse(arn: &str) -> Result<SecretArn, String> {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() < 6 || parts[0] != "arn" || !parts[1].starts_with("aws") {
            return Err("expected arn:aws:<service>:<region>:<account>:<resource>".into());
        }
        let (service, region, account) = (parts[2], parts[3], parts[4]);
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("the region {region:?} is not a region name"));
        }
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("the account {account:?} is not 12 digits"));
        }
        let resource = parts[5..].join(":");
        let base = |store, id: String| SecretArn {
            arn: arn.to_string(),
            store,
            region: region.to_string(),
            id,
            json_key: None,
            version_stage: None,
            version_id: None,
        };
        match service {
            "ssm" => {
                let name = resource
                    .strip_prefix("parameter/")
                    .filter(|n| !n.is_empty() && !n.contains(':'))
                    .ok_or("an SSM ARN names a parameter: …:parameter/<name>")?;
                // A hierarchical name (/prod/db) loses its leading slash in the ARN.
                let name = if name.contains('/') {
                    format!("/{name}")
                } else {
                    name.to_string()
                };
                Ok(base(SecretStore::Ssm, name))
            }
            "secretsmanager" => {
                if parts.len() < 7 || parts[5] != "secret" || parts[6].is_empty() {
                    return Err("a Secrets Manager ARN names a secret: …:secret:<name>".into());
                }
                if parts.len() > 10 {
                    return Err(
                        "after the secret's name come at most :<json key>:<version stage>:<version id>"
                            .into(),
                    );
                }
                let field = |i: usize| {
                    parts
                        .get(i)
                        .filter(|p| !p.is_empty())
                        .map(|p| p.to_string())
                };
                let mut parsed = base(SecretStore::SecretsManager, parts[..7].join(":"));
                parsed.json_key = field(7);
                parsed.version_stage = field(8);
                parsed.version_id = field(9);
                if parsed.version_stage.is_some() && parsed.version_id.is_some() {
                    return Err("give a version stage or a version id, not both".into());
                }
                Ok(parsed)
            }
            other => Err(format!(
                "the service {other:?} keeps no secrets: expected ssm or secretsmanager"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssm_parameters_are_named_as_ssm_names_them() {
        let a = SecretArn::parse("arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db").unwrap();
        assert_eq!(
            (a.store, a.region.as_str(), a.id.as_str()),
            (SecretStore::Ssm, "eu-west-1", "/prod/db")
        );
        let a = SecretArn::parse("arn:aws:ssm:eu-west-1:123456789012:parameter/token").unwrap();
        assert_eq!(a.id, "token");
    }

    #[test]
    fn secrets_manager_arns_take_a_json_key_and_a_version() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
        let a = SecretArn::parse(arn).unwrap();
        assert_eq!(
            (a.store, a.id.as_str(), a.json_key),
            (SecretStore::SecretsManager, arn, None)
        );
        let a = SecretArn::parse(&format!("{arn}:password::")).unwrap();
        assert_eq!(
            (a.id.as_str(), a.json_key.as_deref()),
            (arn, Some("password"))
        );
        let a = SecretArn::parse(&format!("{arn}::AWSPREVIOUS:")).unwrap();
        assert_eq!(a.version_stage.as_deref(), Some("AWSPREVIOUS"));
    }

    #[test]
    fn anything_else_is_refused_saying_why() {
        for (arn, why) in [
            ("db-password", "expected arn:aws:"),
            (
                "arn:aws:s3:us-east-1:123456789012:bucket/x",
                "keeps no secrets",
            ),
            ("arn:aws:ssm:us-east-1:1234:parameter/x", "not 12 digits"),
            ("arn:aws:ssm:US:123456789012:parameter/x", "not a region"),
            (
                "arn:aws:ssm:us-east-1:123456789012:document/x",
                "names a parameter",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
                "names a secret",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:x:k:AWSCURRENT:v1",
                "not both",
            ),
        ] {
            let error = SecretArn::parse(arn).unwrap_err();
            assert!(error.contains(why), "{arn}: {error}");
        }
    }
}
