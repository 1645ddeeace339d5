use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::*;
use crate::pool::Pool;

const IDLE: Duration = Duration::from_secs(60);
const SIGNAL: Duration = Duration::from_secs(10);

/// A connected pair on loopback: (the accepted end, the connecting end).
async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    (accepted.unwrap().0, client.unwrap())
}

/// Where each spawned connection ran, and whether it could read from its socket there.
async fn deal(workers: &Workers, connections: usize) -> Vec<(Option<usize>, String, Vec<u8>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (report, mut reports) = mpsc::unbounded_channel();
    let mut set = JoinSet::new();
    let mut clients = Vec::new();
    for n in 0..connections {
        let (accepted, mut client) = pair(&listener).await;
        let report = report.clone();
        workers.spawn(&mut set, accepted, move |mut stream| async move {
            let mut got = vec![0u8; 1];
            stream.read_exact(&mut got).await.unwrap();
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            report.send((n, current(), name, got)).unwrap();
        });
        client.write_all(&[n as u8]).await.unwrap();
        clients.push(client);
    }
    while set.join_next().await.is_some() {}
    let mut seen = Vec::new();
    while let Ok(one) = reports.try_recv() {
        seen.push(one);
    }
    seen.sort_by_key(|(n, ..)| *n);
    seen.into_iter()
        .map(|(_, at, name, got)| (at, name, got))
        .collect()
}

#[tokio::test]
async fn connections_are_dealt_to_the_serving_threads_in_turn_and_read_there() {
    let workers = Workers::start(2).unwrap();
    let seen = deal(&workers, 4).await;
    assert_eq!(
        seen,
        vec![
            (Some(0), "shipit-edge-0".to_owned(), vec![0]),
            (Some(1), "shipit-edge-1".to_owned(), vec![1]),
            (Some(0), "shipit-edge-0".to_owned(), vec![2]),
            (Some(1), "shipit-edge-1".to_owned(), vec![3]),
        ]
    );
    let dealt: Vec<usize> = workers
        .dealt
        .iter()
        .map(|d| d.load(Ordering::Relaxed))
        .collect();
    assert_eq!(dealt, [2, 2]);
}

#[tokio::test]
async fn with_no_serving_threads_a_connection_runs_on_the_callers_runtime() {
    let workers = Workers::start(0).unwrap();
    let here = std::thread::current().name().unwrap_or_default().to_owned();
    assert_eq!(
        deal(&workers, 2).await,
        vec![(None, here.clone(), vec![0]), (None, here, vec![1])]
    );
}

#[test]
fn edges_share_the_process_serving_threads() {
    let first = Workers::start(1).unwrap();
    let second = Workers::start(2).unwrap();
    assert!(threads().len() >= 2);
    // The same runtime: a task spawned on either handle runs on the thread named 0.
    let on = |handle: &Handle| {
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move { tx.send(current()).unwrap() });
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    };
    assert_eq!(on(&first.handles()[0]), Some(0));
    assert_eq!(on(&second.handles()[0]), Some(0));
    assert_eq!(on(&second.handles()[1]), Some(1));
}

/// Runs `task` on serving thread `thread` and waits for its answer.
async fn on_thread<T: Send + 'static>(
    workers: &Workers,
    thread: usize,
    task: impl Future<Output = T> + Send + 'static,
) -> T {
    workers.handles()[thread].spawn(task).await.unwrap()
}

/// Pools one new connection from each of `threads` in turn (a serving thread's index
/// each); returns their far ends, in the same order.
async fn put_from(
    workers: &Workers,
    listener: &TcpListener,
    pool: &Arc<Pool>,
    threads: impl IntoIterator<Item = usize>,
) -> Vec<TcpStream> {
    let mut far_ends = Vec::new();
    for thread in threads {
        let (far, near) = pair(listener).await;
        far_ends.push(far);
        let near = near.into_std().unwrap();
        let pool = Arc::clone(pool);
        on_thread(workers, thread, async move {
            pool.put(TcpStream::from_std(near).unwrap(), IDLE);
        })
        .await;
    }
    far_ends
}

#[tokio::test]
async fn a_serving_thread_takes_its_own_idle_connection_before_a_newer_one_of_another() {
    let workers = Workers::start(2).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pool = Arc::new(Pool::default());
    // Thread 0 puts one, then thread 1 puts a newer one.
    let far_ends = put_from(&workers, &listener, &pool, [0, 1]).await;
    let port_of = |far: &TcpStream| far.peer_addr().unwrap().port();
    let (first, second) = (port_of(&far_ends[0]), port_of(&far_ends[1]));
    let taken = |thread| {
        let pool = Arc::clone(&pool);
        on_thread(&workers, thread, async move {
            let stream = pool.take(IDLE).unwrap();
            let port = stream.local_addr().unwrap().port();
            pool.put(stream, IDLE);
            port
        })
    };
    assert_eq!(
        taken(0).await,
        first,
        "thread 0 takes its own, not the newest"
    );
    assert_eq!(taken(1).await, second, "thread 1 takes its own");
    assert_eq!(taken(0).await, first);
    assert_eq!(pool.len(), 2);
}

#[tokio::test]
async fn a_serving_thread_takes_its_own_idle_connection_however_many_of_another_are_newer() {
    let workers = Workers::start(2).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pool = Arc::new(Pool::default());
    // Thread 0 puts one, then thread 1 puts many newer ones: as under a load whose two
    // threads return connections in turn, with thread 0's last one further back.
    let threads = std::iter::once(0).chain(std::iter::repeat_n(1, 40));
    let far_ends = put_from(&workers, &listener, &pool, threads).await;
    let own = far_ends[0].peer_addr().unwrap().port();
    let pool_for_take = Arc::clone(&pool);
    let taken = on_thread(&workers, 0, async move {
        pool_for_take
            .take(IDLE)
            .map(|stream| stream.local_addr().unwrap().port())
    })
    .await;
    assert_eq!(
        taken,
        Some(own),
        "thread 0 moved another thread's connection while one of its own was idle"
    );
    assert_eq!(pool.homes(), [Some(1)]);
    assert_eq!(pool.len(), 40);
}

#[test]
fn an_idle_connection_of_a_runtime_that_does_not_run_is_moved_and_carries_bytes() {
    let workers = Workers::start(1).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let here = runtime();
    let (mut far, near) = here.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        pair(&listener).await
    });
    let near = near.into_std().unwrap();
    let pool = Arc::new(Pool::default());
    // Put from a runtime whose event loop then stands still: a socket still registered with
    // it would wait for readiness forever.
    let still = runtime();
    {
        let pool = Arc::clone(&pool);
        still.block_on(async move { pool.put(TcpStream::from_std(near).unwrap(), IDLE) });
    }
    here.block_on(async {
        let carried = {
            let pool = Arc::clone(&pool);
            on_thread(&workers, 0, async move {
                let mut stream = pool.take(IDLE).expect("the idle connection is open");
                stream.write_all(b"ping").await?;
                let mut answer = [0u8; 4];
                stream.read_exact(&mut answer).await?;
                std::io::Result::Ok(answer)
            })
        };
        let mut asked = [0u8; 4];
        let echo = async {
            far.read_exact(&mut asked).await.unwrap();
            far.write_all(b"pong").await.unwrap();
        };
        let (carried, ()) = tokio::time::timeout(SIGNAL, async { tokio::join!(carried, echo) })
            .await
            .expect("the moved connection carried nothing");
        assert_eq!(&asked, b"ping");
        assert_eq!(&carried.unwrap(), b"pong");
    });
    drop(still);
}
