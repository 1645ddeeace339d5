//! Many services on one edge: two services of one config on one local target, told apart by
//! `[services.<s>.route]` (one by Host, one by path prefix), each released and rolled back on
//! its own under load on both routes, with no failed request and each route reaching its own
//! release; `status` without `-s` lists both, and `release --all` releases each in turn.

use std::process::Command;
use std::time::Instant;

use crate::harness::{Project, assert_success, count_in_census, json, remove_images_of, stderr};
use crate::load::{Load, assert_served_by};

/// The second service of the test's config: its containers and images go with the test.
struct Second<'a> {
    project: &'a Project,
    name: String,
}

impl Drop for Second<'_> {
    fn drop(&mut self) {
        let _ = self.project.run(&["down", "-s", &self.name]);
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=shipit.service={}", self.name))
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        remove_images_of(&self.name);
    }
}

const HOST: &str = "shop.test";

/// Adds a route by Host to the project's service, and a second service (a copy of it) that
/// answers `/slow` on any host.
fn two_services(project: &Project) -> String {
    let first = &project.service;
    let second = format!("{first}b");
    count_in_census(&second, None);
    let text = std::fs::read_to_string(&project.config).unwrap();
    let (services, targets) = text.split_at(text.find("[targets.local]").unwrap());
    let copy = services.replace(
        &format!("[services.{first}"),
        &format!("[services.{second}"),
    );
    let text = format!(
        "{services}[services.{first}.route]\nhosts = [\"{HOST}\"]\n\n{copy}[services.{second}.route]\npaths = [\"/slow\"]\n\n{targets}"
    );
    std::fs::write(&project.config, text).unwrap();
    second
}

async fn release(project: &Project, service: &str) -> String {
    let out = project
        .run_async(&["release", "-s", service, "--json"], &[])
        .await;
    assert_success(&out, &format!("shipit release -s {service}"));
    json(&out)["serves"].as_str().unwrap().to_string()
}

async fn rollback(project: &Project, service: &str) -> String {
    let out = project
        .run_async(&["rollback", "-s", service, "--json"], &[])
        .await;
    assert_success(&out, &format!("shipit rollback -s {service}"));
    json(&out)["serves"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_edge_release_and_roll_back_each_on_its_own_under_load() {
    let project = Project::new("routes");
    let second = two_services(&project);
    let _second = Second {
        project: &project,
        name: second.clone(),
    };
    let first = project.service.clone();
    let (a1, b1) = (
        release(&project, &first).await,
        release(&project, &second).await,
    );

    let start = Instant::now();
    let by_host = Load::start_at(project.listen, 8, Some(HOST), "/");
    let by_path = Load::start_at(project.listen, 8, None, "/slow?ms=1");
    assert!(
        by_host
            .answered_after_now(std::time::Duration::from_secs(10))
            .await
    );
    assert!(
        by_path
            .answered_after_now(std::time::Duration::from_secs(10))
            .await
    );
    let t0 = Instant::now();
    let a2 = release(&project, &first).await;
    let t1 = Instant::now();
    let b2 = release(&project, &second).await;
    let t2 = Instant::now();
    let a3 = rollback(&project, &first).await;
    let t3 = Instant::now();
    let b3 = rollback(&project, &second).await;
    let t4 = Instant::now();
    // Requests started after the last switch, on both routes.
    assert!(
        by_host
            .answered_after_now(std::time::Duration::from_secs(10))
            .await
    );
    assert!(
        by_path
            .answered_after_now(std::time::Duration::from_secs(10))
            .await
    );
    let host_report = by_host.stop().await;
    let path_report = by_path.stop().await;
    host_report.assert_no_failures();
    path_report.assert_no_failures();
    assert_eq!((a3.as_str(), b3.as_str()), (a1.as_str(), b1.as_str()));

    // Each route reached its own service's release, and only it; one service's release
    // never moved the other's traffic.
    assert_served_by(&host_report, start, t0, &a1);
    assert_served_by(&host_report, t1, t2, &a2);
    assert_served_by(&host_report, t3, Instant::now(), &a1);
    assert_served_by(&path_report, start, t1, &b1);
    assert_served_by(&path_report, t2, t3, &b2);
    assert_served_by(&path_report, t4, Instant::now(), &b1);

    // Without -s, status lists both services.
    let out = project.run(&["status", "--json"]);
    assert_success(&out, "shipit status --json");
    let all = json(&out);
    let listed: Vec<(&str, &str)> = all
        .as_array()
        .unwrap_or_else(|| panic!("an array: {all}"))
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap(),
                s["live"]["release"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (first.as_str(), a1.as_str()),
            (second.as_str(), b1.as_str())
        ]
    );
    let text = String::from_utf8_lossy(&project.run(&["status"]).stdout).to_string();
    assert!(
        text.contains(&format!("service {first} on target local")),
        "{text}"
    );
    assert!(
        text.contains(&format!("service {second} on target local")),
        "{text}"
    );

    // release --all: each service in turn, one record each.
    let out = project
        .run_async(&["release", "--all", "--json"], &[])
        .await;
    assert_success(&out, "shipit release --all");
    let records: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let services: Vec<&str> = records
        .iter()
        .map(|r| r["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        [first.as_str(), second.as_str()],
        "{}",
        stderr(&out)
    );
    let (a4, b4) = (
        records[0]["serves"].as_str().unwrap(),
        records[1]["serves"].as_str().unwrap(),
    );
    let (_, body) = crate::harness::get_as(project.listen, HOST, "/")
        .await
        .unwrap();
    assert!(body.contains(&format!("release={a4} ")), "{body}");
    let (_, body) = crate::harness::get(project.listen, "/slow?ms=0")
        .await
        .unwrap();
    assert!(body.contains(&format!("release={b4} ")), "{body}");
}
