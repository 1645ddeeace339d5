//! The four Parameter Store calls the lock makes, behind [`Params`]: SSM in a release, a map
//! in memory in the tests that run the lock's lease on tokio's paused clock.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_ssm::types::ParameterType;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::history::BoxFuture;

/// A failed Parameter Store call: which, on what, and what the service said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {name} failed: {detail}")]
pub struct ParamError {
    pub operation: &'static str,
    pub name: String,
    pub detail: String,
}

/// Parameter Store, as far as the lock uses it. Only [`Params::create`] is atomic: of two
/// callers creating one name, exactly one gets `true`.
pub trait Params: Send + Sync + std::fmt::Debug {
    /// The parameter `name`, for messages: "SSM /shipit/prod/hello/lock (eu-west-1)".
    fn describe(&self, name: &str) -> String;
    /// Creates `name` unless it exists: `false` when it did.
    fn create<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
        description: &'a str,
    ) -> BoxFuture<'a, Result<bool, ParamError>>;
    /// Sets `name` whether it exists or not.
    fn overwrite<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), ParamError>>;
    /// The value of `name`, `None` when it does not exist.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, ParamError>>;
    /// Deletes `name`: `false` when it did not exist.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, ParamError>>;
}

impl Params for aws_sdk_ssm::Client {
    fn describe(&self, name: &str) -> String {
        let region = self
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "no region".to_string());
        format!("SSM {name} ({region})")
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
        description: &'a str,
    ) -> BoxFuture<'a, Result<bool, ParamError>> {
        Box::pin(async move {
            let put = self
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::String)
                .overwrite(false)
                .description(description)
                .send()
                .await;
            match put {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_parameter_already_exists()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(failed("PutParameter", name, &e)),
            }
        })
    }

    fn overwrite<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), ParamError>> {
        Box::pin(async move {
            self.put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failed("PutParameter", name, &e))
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, ParamError>> {
        Box::pin(async move {
            match self.get_parameter().name(name).send().await {
                Ok(out) => Ok(Some(
                    out.parameter()
                        .and_then(|p| p.value())
                        .unwrap_or_default()
                        .to_string(),
                )),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_parameter_not_found()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(failed("GetParameter", name, &e)),
            }
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, ParamError>> {
        Box::pin(async move {
            match self.delete_parameter().name(name).send().await {
                Ok(_) => Ok(true),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_parameter_not_found()) =>
                {
                    Ok(false)
                }
                Err(e) => Err(failed("DeleteParameter", name, &e)),
            }
        })
    }
}

fn failed<E: std::error::Error + 'static>(
    operation: &'static str,
    name: &str,
    error: &E,
) -> ParamError {
    ParamError {
        operation,
        name: name.to_string(),
        detail: DisplayErrorContext(error).to_string(),
    }
}

/// Parameters in memory, for tests: the same answers as SSM's.
#[derive(Debug, Default)]
pub struct MemoryParams {
    values: Mutex<BTreeMap<String, String>>,
}

impl MemoryParams {
    /// The value of `name` now.
    pub fn value(&self, name: &str) -> Option<String> {
        self.values.lock().unwrap().get(name).cloned()
    }

    /// Every name that exists now.
    pub fn names(&self) -> Vec<String> {
        self.values.lock().unwrap().keys().cloned().collect()
    }
}

impl Params for MemoryParams {
    fn describe(&self, name: &str) -> String {
        format!("memory {name}")
    }

    // Each call yields first, as a network call would, so that two runs' calls interleave.
    fn create<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
        _description: &'a str,
    ) -> BoxFuture<'a, Result<bool, ParamError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let mut values = self.values.lock().unwrap();
            let created = !values.contains_key(name);
            if created {
                values.insert(name.to_string(), value.to_string());
            }
            Ok(created)
        })
    }

    fn overwrite<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), ParamError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.values
                .lock()
                .unwrap()
                .insert(name.to_string(), value.to_string());
            Ok(())
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<String>, ParamError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(self.value(name))
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, ParamError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            Ok(self.values.lock().unwrap().remove(name).is_some())
        })
    }
}
