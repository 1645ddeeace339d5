//! The build step alone, for `bench/build.sh`: builds or decides one context and prints what
//! it did as one JSON line on stdout.
//!
//! ```sh
//! build_context build  <context> <tag> <cache-dir> <label=value>
//! build_context decide <context> <tag> <cache-dir> <label=value>
//! ```
//!
//! `ms` is the time of the library call alone (hash, reuse lookup, and for `build` the
//! streamed send and the engine's build), without process start and engine connect.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use shipit_pipeline::build::{self, BuildRequest};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, context, tag, cache_dir, label] = args.as_slice() else {
        return Err(
            "usage: build_context <build|decide> <context> <tag> <cache-dir> <label=value>".into(),
        );
    };
    let (key, value) = label.split_once('=').ok_or("the label must be key=value")?;
    let req = BuildRequest {
        service: "bench".to_string(),
        context: PathBuf::from(context),
        dockerfile: PathBuf::from("Dockerfile"),
        tag: tag.clone(),
        labels: BTreeMap::from([(key.to_string(), value.to_string())]),
        cache_dir: Some(PathBuf::from(cache_dir)),
    };
    let docker = shipit_pipeline::docker::connect().await?;
    let started = Instant::now();
    let line = match mode.as_str() {
        "build" => {
            let built = build::build(&docker, &req, &mut |_| {}).await?;
            serde_json::json!({
                "ms": started.elapsed().as_secs_f64() * 1000.0,
                "reused": built.reused,
                "id": built.id,
            })
        }
        "decide" => {
            let decision = build::decide(&docker, &req).await?;
            serde_json::json!({
                "ms": started.elapsed().as_secs_f64() * 1000.0,
                "reused": decision.reuse.is_some(),
                "files_hashed": decision.stats.files_hashed,
                "files_reused": decision.stats.files_reused,
            })
        }
        other => return Err(format!("unknown mode {other}: build or decide").into()),
    };
    // The one line of data this tool prints, for the bench script to read.
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}
