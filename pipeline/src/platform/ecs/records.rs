//! The release lock and the release history of an ecs target, kept in AWS SSM Parameter Store
//! next to the service, so that any machine with the same credentials sees them.
//!
//! Why SSM parameters: PutParameter without overwrite is an atomic create-if-absent, so when
//! two CI runners on two machines race for the lock exactly one of them creates the parameter
//! and the other is refused; there is no table to provision (DynamoDB would need one, and its
//! name in the config); and the records are readable with the AWS console or CLI by anyone who
//! can release. Standard parameters are free and hold 4 KB, which a compact release record
//! fits in.
//!
//! Names, under [`PARAMETER_ROOT`]:
//! - `/shipit/<cluster>/<service>/lock`: the holder (who, host, pid, since, what), a random
//!   token and when its lease runs out, as JSON ([`lock`]). Only the run whose token it holds
//!   releases it; the running release renews its lease, and a run that died leaves it until
//!   the lease runs out (then the next run takes it over) or `shipit lock release --force`
//!   deletes it.
//! - `/shipit/<cluster>/<service>/releases/<release id>`: one release record each, as compact
//!   JSON, rewritten at every phase boundary. At most [`MAX_RECORDS`] are kept: saving a new
//!   one deletes the oldest beyond that.

use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::history::{BoxFuture, HistoryError, HistoryStore, Outcome, ReleaseRecord};

mod lock;
pub mod params;

pub use lock::{Clock, DEFAULT_LOCK_LEASE, SsmLockStore, SystemClock};

/// The root of every parameter shipit writes.
pub const PARAMETER_ROOT: &str = "/shipit";
/// How many release records a service keeps on a target; older ones are deleted on save.
pub const MAX_RECORDS: usize = 100;
/// The largest value of a standard-tier SSM parameter, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// How many pages of GetParametersByPath a listing reads at most (10 records a page on
/// moto, up to 10 on AWS): far more than [`MAX_RECORDS`] needs, a bound if pruning fell
/// behind.
const MAX_LIST_PAGES: usize = 1000;

/// The parameter folder of one service on one cluster: `/shipit/<cluster>/<service>`. A
/// cluster given as an ARN is named by its last part; characters SSM does not allow in names
/// become `_`.
pub fn service_path(cluster: &str, service: &str) -> String {
    let cluster = cluster.rsplit('/').next().unwrap_or(cluster);
    format!(
        "{PARAMETER_ROOT}/{}/{}",
        name_part(cluster),
        name_part(service)
    )
}

fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn region_of(ssm: &aws_sdk_ssm::Client) -> String {
    ssm.config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "no region".to_string())
}

/// The release records of one service on an ecs target, one SSM parameter each under
/// `/shipit/<cluster>/<service>/releases/`.
#[derive(Debug, Clone)]
pub struct SsmHistory {
    ssm: aws_sdk_ssm::Client,
    /// `/shipit/<cluster>/<service>/releases`, without the trailing `/`.
    path: String,
    max_records: usize,
}

impl SsmHistory {
    pub fn new(ssm: aws_sdk_ssm::Client, cluster: &str, service: &str) -> SsmHistory {
        SsmHistory {
            ssm,
            path: format!("{}/releases", service_path(cluster, service)),
            max_records: MAX_RECORDS,
        }
    }

    /// Keeps at most `max` records instead of [`MAX_RECORDS`].
    pub fn with_max_records(mut self, max: usize) -> SsmHistory {
        self.max_records = max.max(1);
        self
    }

    /// The parameter folder of the records, `/shipit/<cluster>/<service>/releases`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The parameter name of a record.
    pub fn name_of(&self, id: &str) -> String {
        format!("{}/{id}", self.path)
    }

    fn remote(&self, message: String, hint: Option<&str>) -> HistoryError {
        HistoryError::Remote {
            store: self.describe(),
            message,
            hint: hint.map(str::to_string),
        }
    }

    fn check_id(&self, id: &str) -> Result<(), HistoryError> {
        let valid = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if valid {
            Ok(())
        } else {
            Err(self.remote(
                format!("the release id {id:?} cannot name an SSM parameter"),
                Some("release ids are made of letters, digits, '.', '_' and '-'"),
            ))
        }
    }

    async fn save_now(&self, record: &ReleaseRecord) -> Result<(), HistoryError> {
        self.check_id(&record.id)?;
        let name = self.name_of(&record.id);
        let value = fit(record).map_err(|size| {
            self.remote(
                format!(
                    "the record of release {} is {size} bytes as JSON; the SSM parameter {name} \
                     holds at most {MAX_VALUE_BYTES}",
                    record.id
                ),
                Some("fewer or shorter module names and labels make it fit; this is a bug if it happens with a few modules"),
            )
        })?;
        let out = self
            .ssm
            .put_parameter()
            .name(&name)
            .value(value)
            .r#type(ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| {
                self.remote(
                    format!("PutParameter {name} failed: {}", DisplayErrorContext(&e)),
                    Some(
                        "check the AWS credentials and that they allow ssm:PutParameter on \
                         /shipit/*",
                    ),
                )
            })?;
        // Version 1: this save created the record, so there may now be one too many.
        if out.version() == 1 {
            self.prune(&record.id).await?;
        }
        Ok(())
    }

    /// Deletes the oldest records beyond `max_records`, never `keep`.
    async fn prune(&self, keep: &str) -> Result<(), HistoryError> {
        let records = self.list_now().await?;
        if records.len() <= self.max_records {
            return Ok(());
        }
        let doomed: Vec<String> = records[self.max_records..]
            .iter()
            .filter(|r| r.id != keep)
            .map(|r| self.name_of(&r.id))
            .collect();
        // DeleteParameters takes at most 10 names a call.
        for chunk in doomed.chunks(10) {
            self.ssm
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| {
                    self.remote(
                        format!(
                            "DeleteParameters (pruning records beyond {}) failed: {}",
                            self.max_records,
                            DisplayErrorContext(&e)
                        ),
                        Some("check that the AWS credentials allow ssm:DeleteParameters"),
                    )
                })?;
        }
        Ok(())
    }

    async fn get_now(&self, id: &str) -> Result<Option<ReleaseRecord>, HistoryError> {
        self.check_id(id)?;
        let name = self.name_of(id);
        match self.ssm.get_parameter().name(&name).send().await {
            Ok(out) => {
                let value = out.parameter().and_then(|p| p.value()).unwrap_or_default();
                self.parse(&name, value).map(Some)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.remote(
                format!("GetParameter {name} failed: {}", DisplayErrorContext(&e)),
                Some("check the AWS credentials and that they allow ssm:GetParameter"),
            )),
        }
    }

    async fn list_now(&self) -> Result<Vec<ReleaseRecord>, HistoryError> {
        let mut records = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let out = self
                .ssm
                .get_parameters_by_path()
                .path(&self.path)
                .recursive(false)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    self.remote(
                        format!(
                            "GetParametersByPath {} failed: {}",
                            self.path,
                            DisplayErrorContext(&e)
                        ),
                        Some(
                            "check the AWS credentials and that they allow \
                             ssm:GetParametersByPath",
                        ),
                    )
                })?;
            for parameter in out.parameters() {
                let name = parameter.name().unwrap_or_default();
                records.push(self.parse(name, parameter.value().unwrap_or_default())?);
            }
            match out.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => {
                    records.sort_by(|a: &ReleaseRecord, b: &ReleaseRecord| {
                        b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id))
                    });
                    return Ok(records);
                }
            }
        }
        Err(self.remote(
            format!(
                "{} has more than {MAX_LIST_PAGES} pages of records",
                self.path
            ),
            Some("delete old records under this path"),
        ))
    }

    fn parse(&self, name: &str, value: &str) -> Result<ReleaseRecord, HistoryError> {
        serde_json::from_str(value).map_err(|e| {
            self.remote(
                format!("the release record {name} is not valid: {e}"),
                Some(&format!(
                    "delete it (`aws ssm delete-parameter --name {name}`); the other records are intact"
                )),
            )
        })
    }
}

/// The compact JSON of a record that fits in a standard parameter. A failure's cause can carry
/// a container's last log lines and be long: it is cut in the middle (its start says what
/// failed, its end the last thing seen) until the record fits. `Err` holds the size when even
/// that is not enough.
fn fit(record: &ReleaseRecord) -> Result<String, usize> {
    let full = serde_json::to_string(record).expect("a record serializes");
    if full.len() <= MAX_VALUE_BYTES {
        return Ok(full);
    }
    let cause = match &record.outcome {
        Outcome::Failed { cause, .. } | Outcome::Interrupted { cause } => cause.clone(),
        _ => return Err(full.len()),
    };
    let mut shorter = record.clone();
    let mut keep = cause.len();
    // JSON escapes make the text longer than the cause's bytes, so measure again after each
    // cut; each round cuts at least the excess, so a few rounds are enough.
    for _ in 0..16 {
        let text = serde_json::to_string(&shorter).expect("a record serializes");
        if text.len() <= MAX_VALUE_BYTES {
            return Ok(text);
        }
        if keep == 0 {
            break;
        }
        keep = keep.saturating_sub(text.len() - MAX_VALUE_BYTES + 64);
        let cut = cut_middle(&cause, keep);
        match &mut shorter.outcome {
            Outcome::Failed { cause, .. } | Outcome::Interrupted { cause } => *cause = cut,
            _ => unreachable!("the outcome was matched above"),
        }
    }
    Err(full.len())
}

/// `s` cut to about `keep` bytes: its start and its end, with a marker between.
fn cut_middle(s: &str, keep: usize) -> String {
    let head_len = keep / 2;
    let tail_len = keep - head_len;
    let mut head_end = head_len.min(s.len());
    while !s.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = s.len().saturating_sub(tail_len).max(head_end);
    while !s.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{} […{} bytes cut to fit the SSM parameter…] {}",
        &s[..head_end],
        tail_start - head_end,
        &s[tail_start..]
    )
}

impl HistoryStore for SsmHistory {
    fn describe(&self) -> String {
        format!("SSM {} ({})", self.path, region_of(&self.ssm))
    }

    fn save<'a>(&'a self, record: &'a ReleaseRecord) -> BoxFuture<'a, Result<(), HistoryError>> {
        Box::pin(self.save_now(record))
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ReleaseRecord>, HistoryError>> {
        Box::pin(self.get_now(id))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ReleaseRecord>, HistoryError>> {
        Box::pin(self.list_now())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Slot;
    use crate::history::Kind;

    fn record(cause: &str) -> ReleaseRecord {
        ReleaseRecord {
            id: "20261122-101500-a1b2".into(),
            kind: Kind::Release,
            service: "hello".into(),
            target: "aws".into(),
            serves: "20261122-101500-a1b2".into(),
            slot: Some(Slot::Green),
            image: Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/hello@sha256:ab".into()),
            image_id: Some("sha256:ab".into()),
            handle: None,
            version: "1a2b3c4".into(),
            revision: None,
            modules: BTreeMap::new(),
            image_reused: false,
            previous: None,
            user: "ci".into(),
            host: "runner-1".into(),
            started_at: "2026-11-22T10:15:00Z".parse().unwrap(),
            finished_at: None,
            phases: vec![],
            shift_steps: vec![],
            warmup: None,
            outcome: Outcome::Failed {
                cause: cause.into(),
                hint: Some("look at the logs".into()),
            },
        }
    }

    #[test]
    fn parameter_names_follow_cluster_and_service() {
        assert_eq!(service_path("prod", "hello"), "/shipit/prod/hello");
        assert_eq!(
            service_path("arn:aws:ecs:us-east-1:123456789012:cluster/prod", "hello"),
            "/shipit/prod/hello"
        );
        assert_eq!(service_path("prod", "he llo"), "/shipit/prod/he_llo");
    }

    #[test]
    fn small_record_is_compact_json() {
        let r = record("unhealthy");
        let text = fit(&r).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<ReleaseRecord>(&text).unwrap(), r);
    }

    #[test]
    fn long_failure_cause_is_cut_in_the_middle_to_fit() {
        let cause = format!(
            "the candidate exited; last log lines:\n{}\nFATAL: the end",
            "log line with \"quotes\" and ünïcödé\n".repeat(400)
        );
        let text = fit(&record(&cause)).unwrap();
        assert!(text.len() <= MAX_VALUE_BYTES, "{}", text.len());
        let back: ReleaseRecord = serde_json::from_str(&text).unwrap();
        let Outcome::Failed { cause: cut, .. } = back.outcome else {
            panic!("outcome changed")
        };
        assert!(cut.starts_with("the candidate exited"), "{cut}");
        assert!(cut.ends_with("FATAL: the end"), "{cut}");
        assert!(cut.contains("bytes cut to fit the SSM parameter"), "{cut}");
    }

    #[test]
    fn record_too_big_even_when_cut_is_refused_with_its_size() {
        let mut r = record("short");
        for i in 0..200 {
            r.modules
                .insert(format!("module-with-a-long-name-{i}"), "1.2.3".into());
        }
        let size = fit(&r).unwrap_err();
        assert!(size > MAX_VALUE_BYTES);
    }
}
