//! The edge as a process: killed and restarted, it restores its routes.

use std::time::Duration;

use crate::harness::{Project, get, wait_until};
use crate::load::release_of;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_edge_restores_its_routes_on_restart() {
    let project = Project::new("restart");
    let first = project.release_async().await;
    let pid = project.edge_pid().expect("the release started the edge");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let listen = project.listen;
    wait_until(
        "the killed edge to stop answering",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(listen).is_err(),
    );

    // The live release is still known while the edge is down: from its saved routes.
    assert_eq!(project.status()["live"]["release"], first.as_str());

    let mut edge = tokio::process::Command::from(project.command(&["edge", "run"]))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until(
        "the restarted edge to listen",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(listen).is_ok(),
    );
    let (status, body) = get(listen, "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(release_of(&body).as_deref(), Some(first.as_str()), "{body}");

    // A release through the restarted edge still works.
    let second = project.release_async().await;
    let (_, body) = get(listen, "/").await.unwrap();
    assert_eq!(
        release_of(&body).as_deref(),
        Some(second.as_str()),
        "{body}"
    );

    let out = project.run(&["edge", "stop"]);
    crate::harness::assert_success(&out, "shipit edge stop");
    let exit = tokio::time::timeout(Duration::from_secs(10), edge.wait())
        .await
        .expect("the edge exits after `edge stop`")
        .unwrap();
    assert!(exit.success(), "the edge exited with {exit}");
}
