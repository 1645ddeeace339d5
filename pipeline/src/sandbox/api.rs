//! The sandbox's AWS endpoint: it passes every call on to the emulator, but answers ECS's task
//! reads from the agent's truth ([`Tasks`]), since the emulator runs no task.
//!
//! - `ListTasks` and `DescribeTasks` list the tasks the agent ran, with their status, stop
//!   code, stopped reason and container exit code; a task it does not know is `MISSING`.
//! - `RunTask` and `StopTask` start and stop a one-off task (a migration) through the agent.
//! - `DescribeServices` is the emulator's answer with the counts the agent sees: each
//!   service's running and pending tasks, each deployment's, one `ACTIVE` deployment per
//!   older task definition that still has tasks, and the `PRIMARY` one's rollout state
//!   (`COMPLETED` once it runs the desired count and nothing else does).
//!
//! Requests are read whole, up to [`MAX_BODY`]; the endpoint listens on 127.0.0.1 only. A
//! web page open in a browser on this machine could still reach it: so a request that
//! carries an `Origin`, names another `Host` than the endpoint's own address (DNS
//! rebinding), or is a CORS preflight (`OPTIONS`) is refused, and never reaches the emulator.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::runner::{Request as AgentRequest, Task, Tasks};

/// The largest request or answer body the endpoint reads.
const MAX_BODY: usize = 16 * 1024 * 1024;
const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// Serves the endpoint on `listener` until `stop`, passing calls on to `upstream`.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    tasks: Tasks,
    agent: tokio::sync::mpsc::Sender<AgentRequest>,
    plane: tokio::sync::mpsc::Sender<super::plane::Refresh>,
    stop: CancellationToken,
) {
    let client: Upstream = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let (client, tasks, agent, plane) =
            (client.clone(), tasks.clone(), agent.clone(), plane.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (client, tasks, agent, plane) =
                    (client.clone(), tasks.clone(), agent.clone(), plane.clone());
                async move {
                    if let Some(refused) = refuse_foreign(&request, port) {
                        return Ok::<_, Infallible>(refused);
                    }
                    let answered = answer(request, &client, upstream, &tasks, &agent, &plane).await;
                    Ok::<_, Infallible>(answered)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The refusal of a request that did not come from a program on this machine talking to
/// this endpoint: one from a web page (`Origin`, a CORS preflight) or by another name (`Host`).
fn refuse_foreign<B>(request: &Request<B>, port: u16) -> Option<Response<Full<Bytes>>> {
    if request.headers().contains_key(hyper::header::ORIGIN)
        || request.method() == hyper::Method::OPTIONS
    {
        return Some(plain(
            StatusCode::FORBIDDEN,
            "the sandbox's endpoint takes no request from a web page\n".into(),
        ));
    }
    let host = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let ours = ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|name| host.eq_ignore_ascii_case(&format!("{name}:{port}")));
    if ours {
        return None;
    }
    Some(plain(
        StatusCode::FORBIDDEN,
        format!("the sandbox's endpoint answers only as 127.0.0.1:{port}, not as {host:?}\n"),
    ))
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

fn ecs_json(value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

async fn answer(
    request: Request<Incoming>,
    client: &Upstream,
    upstream: SocketAddr,
    tasks: &Tasks,
    agent: &tokio::sync::mpsc::Sender<AgentRequest>,
    plane: &tokio::sync::mpsc::Sender<super::plane::Refresh>,
) -> Response<Full<Bytes>> {
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(ECS_TARGET_PREFIX))
        .map(str::to_string);
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the request: {e}"),
            );
        }
    };
    // Only an ECS call's body is read: every other call is passed on as it came.
    let input: Value = if operation.is_some() {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    // ELBv2 speaks the query protocol: the action is a form field of the body.
    let changes_routing = body
        .split(|b| *b == b'&')
        .any(|field| field == b"Action=ModifyListener" || field == b"Action=ModifyRule");
    match operation.as_deref() {
        Some("ListTasks") => return ecs_json(&list_tasks(&input, &tasks.snapshot())),
        Some("DescribeTasks") => return ecs_json(&describe_tasks(&input, &tasks.snapshot())),
        Some("RunTask") => return run_task(&input, agent).await,
        Some("StopTask") => return stop_task(&input, agent).await,
        _ => {}
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: hyper::Uri = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad path: {e}")),
    };
    let mut forward = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    // The emulator reads the region and the account from the signature; the host is its own.
    let Ok(forward) = forward.body(Full::new(body)) else {
        return plain(StatusCode::BAD_REQUEST, "bad request".into());
    };
    let response = match client.request(forward).await {
        Ok(response) => response,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("the sandbox's emulator at {upstream} did not answer: {e}"),
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("reading the emulator's answer: {e}"),
            );
        }
    };
    let body = if operation.as_deref() == Some("DescribeServices") && parts.status.is_success() {
        match serde_json::from_slice::<Value>(&body) {
            Ok(mut value) => {
                with_task_counts(&mut value, &tasks.snapshot());
                Bytes::from(value.to_string())
            }
            Err(_) => body,
        }
    } else {
        body
    };
    if changes_routing && parts.status.is_success() {
        // The load balancer routes by the change before the caller hears it was made.
        let (done, followed) = tokio::sync::oneshot::channel();
        if plane.send(done).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), followed).await;
        }
    }
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Response::from_parts(parts, Full::new(body))
}

/// An ECS error answer, as the SDK reads it.
fn ecs_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = ecs_json(&json!({ "__type": code, "message": message }));
    *response.status_mut() = status;
    response
}

async fn ask(
    agent: &tokio::sync::mpsc::Sender<AgentRequest>,
    request: impl FnOnce(tokio::sync::oneshot::Sender<Result<Task, String>>) -> AgentRequest,
) -> Result<Task, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    agent
        .send(request(reply))
        .await
        .map_err(|_| "the sandbox's agent is stopping".to_string())?;
    // The agent answers once the task's image is there (at most its pull timeout).
    tokio::time::timeout(std::time::Duration::from_secs(90), answer)
        .await
        .map_err(|_| "the sandbox's agent did not answer within 90 s".to_string())?
        .map_err(|_| "the sandbox's agent is stopping".to_string())?
}

/// RunTask: one task (`count` above 1 is refused) of the task definition, with the first
/// container override's command.
async fn run_task(
    input: &Value,
    agent: &tokio::sync::mpsc::Sender<AgentRequest>,
) -> Response<Full<Bytes>> {
    if !input["count"].is_null() && input["count"].as_i64() != Some(1) {
        return ecs_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "the sandbox runs one task per RunTask",
        );
    }
    let Some(task_definition) = input["taskDefinition"].as_str() else {
        return ecs_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "taskDefinition is required",
        );
    };
    let cluster = cluster_name(input);
    let command = input["overrides"]["containerOverrides"]
        .as_array()
        .and_then(|o| o.first())
        .and_then(|o| {
            let name = o["name"].as_str()?.to_string();
            let command: Vec<String> = o["command"]
                .as_array()?
                .iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            Some((name, command))
        });
    let started_by = input["startedBy"].as_str().map(str::to_string);
    let task_definition = task_definition.to_string();
    let result = ask(agent, |reply| AgentRequest::Run {
        task_definition,
        cluster_arn: format!(
            "arn:aws:ecs:{}:123456789012:cluster/{cluster}",
            super::REGION
        ),
        command,
        started_by,
        reply,
    })
    .await;
    match result {
        Ok(task) if task.stop_code == Some("TaskFailedToStart") => ecs_json(&json!({
            "tasks": [],
            "failures": [{ "arn": task.arn, "reason": task.stopped_reason }],
        })),
        Ok(task) => ecs_json(&json!({ "tasks": [task_json(&task)], "failures": [] })),
        Err(e) => ecs_error(StatusCode::BAD_REQUEST, "ClientException", &e),
    }
}

async fn stop_task(
    input: &Value,
    agent: &tokio::sync::mpsc::Sender<AgentRequest>,
) -> Response<Full<Bytes>> {
    let Some(arn) = input["task"].as_str() else {
        return ecs_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            "task is required",
        );
    };
    let arn = arn.to_string();
    let reason = input["reason"]
        .as_str()
        .unwrap_or("Task stopped by user")
        .to_string();
    match ask(agent, |reply| AgentRequest::Stop { arn, reason, reply }).await {
        Ok(task) => ecs_json(&json!({ "task": task_json(&task) })),
        Err(e) => ecs_error(StatusCode::BAD_REQUEST, "InvalidParameterException", &e),
    }
}

/// The cluster a request names, as a name (`sandbox`) whether given as a name or an ARN.
fn cluster_name(input: &Value) -> String {
    let raw = input["cluster"].as_str().unwrap_or("default");
    raw.rsplit('/').next().unwrap_or(raw).to_string()
}

fn in_cluster(task: &Task, cluster: &str) -> bool {
    task.cluster_arn.rsplit('/').next() == Some(cluster)
}

/// A task definition ARN's family.
fn family(task_definition: &str) -> &str {
    let tail = task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition);
    tail.split(':').next().unwrap_or(tail)
}

fn list_tasks(input: &Value, tasks: &[Task]) -> Value {
    let cluster = cluster_name(input);
    let desired = input["desiredStatus"].as_str().unwrap_or("RUNNING");
    let service = input["serviceName"].as_str();
    let family_wanted = input["family"].as_str();
    // The agent's tasks are started by their service's deployment, never by a caller.
    let started_by = input["startedBy"].as_str();
    let arns: Vec<&str> = tasks
        .iter()
        .filter(|t| in_cluster(t, &cluster))
        .filter(|t| t.desired_status == desired)
        .filter(|t| service.is_none_or(|s| s.rsplit('/').next() == Some(t.service.as_str())))
        .filter(|t| family_wanted.is_none_or(|f| f == family(&t.task_definition)))
        .filter(|t| started_by.is_none_or(|s| t.started_by.as_deref() == Some(s)))
        .map(|t| t.arn.as_str())
        .collect();
    json!({ "taskArns": arns })
}

fn describe_tasks(input: &Value, tasks: &[Task]) -> Value {
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for wanted in input["tasks"].as_array().into_iter().flatten() {
        let wanted = wanted.as_str().unwrap_or_default();
        let task = tasks
            .iter()
            .find(|t| t.arn == wanted || t.arn.rsplit('/').next() == Some(wanted));
        match task {
            Some(task) => found.push(task_json(task)),
            None => failures.push(json!({ "arn": wanted, "reason": "MISSING" })),
        }
    }
    json!({ "tasks": found, "failures": failures })
}

fn task_json(task: &Task) -> Value {
    let mut container = json!({
        "name": task.container_name,
        "lastStatus": task.last_status,
        "taskArn": task.arn,
    });
    if let Some(code) = task.exit_code {
        container["exitCode"] = json!(code);
    }
    if let Some(addr) = task.address {
        container["networkInterfaces"] = json!([{ "privateIpv4Address": addr.ip().to_string() }]);
    }
    let mut value = json!({
        "taskArn": task.arn,
        "clusterArn": task.cluster_arn,
        "taskDefinitionArn": task.task_definition,
        "group": if task.service.is_empty() {
            format!("family:{}", family(&task.task_definition))
        } else {
            format!("service:{}", task.service)
        },
        "startedBy": task
            .started_by
            .clone()
            .unwrap_or_else(|| format!("ecs-svc/{}", task.service)),
        "lastStatus": task.last_status,
        "desiredStatus": task.desired_status,
        "launchType": "FARGATE",
        "createdAt": task.created_at,
        "containers": [container],
    });
    for (key, field) in [
        ("startedAt", task.started_at),
        ("stoppedAt", task.stopped_at),
    ] {
        if let Some(at) = field {
            value[key] = json!(at);
        }
    }
    if let Some(code) = task.stop_code {
        value["stopCode"] = json!(code);
    }
    if let Some(reason) = &task.stopped_reason {
        value["stoppedReason"] = json!(reason);
    }
    value
}

/// Puts the agent's task counts into a `DescribeServices` answer.
fn with_task_counts(answer: &mut Value, tasks: &[Task]) {
    let Some(services) = answer["services"].as_array_mut() else {
        return;
    };
    for service in services {
        let name = service["serviceName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let desired = service["desiredCount"].as_i64().unwrap_or(0);
        let live: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.service == name && t.last_status != "STOPPED")
            .collect();
        let count = |td: Option<&str>, status: &str| {
            live.iter()
                .filter(|t| td.is_none_or(|td| t.task_definition == td))
                .filter(|t| t.last_status == status)
                .count()
        };
        service["runningCount"] = json!(count(None, "RUNNING") + count(None, "DEACTIVATING"));
        service["pendingCount"] = json!(count(None, "PENDING"));
        let mut deployments: Vec<Value> = service["deployments"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The emulator keeps its first deployment's task definition through UpdateService;
        // the PRIMARY deployment is the service's current one, as on ECS.
        let current = service["taskDefinition"].clone();
        for deployment in &mut deployments {
            if deployment["status"] == "PRIMARY" && current.is_string() {
                deployment["taskDefinition"] = current.clone();
            }
        }
        let mut listed: Vec<String> = Vec::new();
        for deployment in &mut deployments {
            let td = deployment["taskDefinition"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let running = count(Some(&td), "RUNNING") + count(Some(&td), "DEACTIVATING");
            deployment["runningCount"] = json!(running);
            deployment["pendingCount"] = json!(count(Some(&td), "PENDING"));
            listed.push(td);
        }
        for td in live.iter().map(|t| t.task_definition.clone()) {
            if listed.contains(&td) {
                continue;
            }
            deployments.push(json!({
                "id": format!("ecs-svc/sandbox-{}", family(&td)),
                "status": "ACTIVE",
                "taskDefinition": td,
                "desiredCount": 0,
                "runningCount": count(Some(&td), "RUNNING") + count(Some(&td), "DEACTIVATING"),
                "pendingCount": count(Some(&td), "PENDING"),
            }));
            listed.push(td);
        }
        let others: usize = deployments
            .iter()
            .filter(|d| d["status"] != "PRIMARY")
            .map(|d| usize::try_from(d["runningCount"].as_i64().unwrap_or(0)).unwrap_or(0))
            .sum();
        for deployment in &mut deployments {
            if deployment["status"] == "PRIMARY" {
                let running = deployment["runningCount"].as_i64().unwrap_or(0);
                deployment["rolloutState"] = json!(if running >= desired && others == 0 {
                    "COMPLETED"
                } else {
                    "IN_PROGRESS"
                });
            }
        }
        service["deployments"] = Value::Array(deployments);
    }
}
