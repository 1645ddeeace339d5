//! `shipit status`: what is live, read from where traffic really goes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use shipit_pipeline::Slot;
use shipit_pipeline::history::Outcome;
use shipit_pipeline::platform::Platform;
use shipit_pipeline::platform::observed::{RoutedCandidate, SlotHealth};
use shipit_pipeline::release;

use super::Selected;
use crate::exit::Failure;
use crate::printer::Printer;

/// The `status --json` shape. Stable: scripts read `url`, `live.slot` and `live.release`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub service: String,
    pub target: String,
    pub url: String,
    pub live: Option<LiveStatus>,
    /// The live slot probed now: its health, its container, and since when it fails. Null
    /// when nothing is live, or the target's kind does not probe.
    pub health: Option<SlotHealth>,
    /// The candidate that takes traffic beside the live slot: a weighted split (`percent`)
    /// or a preview.
    pub candidate: Option<RoutedCandidate>,
    /// A release staged by `release --no-promote` whose candidate still runs, waiting for
    /// `shipit promote`.
    pub staged: Option<StagedStatus>,
    /// Set while the service is paused or under maintenance (`paused`, `maintenance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<shipit_pipeline::platform::gate::Gate>,
}

#[derive(Debug, Serialize)]
pub struct StagedStatus {
    pub slot: Slot,
    pub release: String,
    pub version: String,
    /// How to reach it, e.g. the URL and the `X-Shipit-Slot` header.
    pub preview: Option<String>,
    pub staged_at: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct LiveStatus {
    pub slot: Slot,
    pub release: String,
    pub image: Option<String>,
    pub image_id: Option<String>,
    pub version: Option<String>,
    /// Library module versions in the live image, by module name.
    pub modules: BTreeMap<String, String>,
    pub since: Option<Timestamp>,
    /// Set when what serves in the live slot is not shipit's: what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foreign: Option<String>,
}

pub async fn run(selected: &Selected, json: bool, printer: Printer) -> Result<(), Failure> {
    let status = collect(selected).await?;
    if json {
        printer.json(&status);
    } else {
        print(&status, printer);
    }
    Ok(())
}

/// The status of every service of a config: `--json` an array of what `status -s <name>
/// --json` prints, in service order; the text a block per service.
pub fn print_all(all: &[Status], json: bool, printer: Printer) -> Result<(), Failure> {
    if json {
        printer.json(&all);
        return Ok(());
    }
    for (n, status) in all.iter().enumerate() {
        if n > 0 {
            printer.data("");
        }
        print(status, printer);
    }
    Ok(())
}

/// What is live for the selected service, read from where traffic really goes.
pub async fn collect(selected: &Selected) -> Result<Status, Failure> {
    let platform = &selected.platform;
    let live = platform.live().await?;
    let observed = platform.observe(live.as_ref()).await?;
    let live = match live {
        Some(l) => {
            let record = match &l.foreign {
                Some(_) => None,
                None => platform.history().get(&l.release).await?,
            };
            Some(LiveStatus {
                slot: l.slot,
                release: l.release,
                image: record.as_ref().and_then(|r| r.image.clone()),
                image_id: record.as_ref().and_then(|r| r.image_id.clone()),
                modules: record
                    .as_ref()
                    .map(|r| r.modules.clone())
                    .unwrap_or_default(),
                version: record.map(|r| r.version),
                since: l.since,
                foreign: l.foreign,
            })
        }
        None => None,
    };
    let mut staged = None;
    if let Some(record) = release::staged_record(platform).await?
        && let Some(slot) = record.slot
        && platform.staged(slot, &record.id).await?.is_some()
    {
        staged = Some(StagedStatus {
            slot,
            release: record.id.clone(),
            version: record.version.clone(),
            preview: match &record.outcome {
                Outcome::Staged { preview } => preview.clone(),
                _ => None,
            },
            staged_at: record.finished_at,
        });
    }
    Ok(Status {
        service: selected.service.name.clone(),
        target: selected.target.name.clone(),
        url: platform.url(),
        live,
        health: observed.health,
        candidate: observed.candidate,
        staged,
        gate: observed.gate,
    })
}

fn print(status: &Status, printer: Printer) {
    printer.data(&format!(
        "service {} on target {} at {}",
        status.service, status.target, status.url
    ));
    match &status.live {
        Some(l) => {
            let since = l.since.map_or("unknown".to_string(), |t| {
                t.round(jiff::Unit::Second).unwrap_or(t).to_string()
            });
            printer.data(&format!("  live slot  {}", l.slot));
            if let Some(what) = &l.foreign {
                printer.data(&format!("  foreign    {what}"));
            }
            printer.data(&format!("  release    {}", l.release));
            printer.data(&format!(
                "  image      {}",
                l.image.as_deref().unwrap_or("unknown")
            ));
            printer.data(&format!(
                "  version    {}",
                l.version.as_deref().unwrap_or("unknown")
            ));
            if !l.modules.is_empty() {
                let modules: Vec<String> = l
                    .modules
                    .iter()
                    .map(|(name, v)| format!("{name} {v}"))
                    .collect();
                printer.data(&format!("  modules    {}", modules.join(", ")));
            }
            printer.data(&format!("  since      {since}"));
        }
        None => printer.data("  nothing is live; run `shipit release`"),
    }
    if let Some(h) = &status.health {
        printer.data(&format!("  health     {}", health_line(h)));
        let mut container = format!("  container  {}", h.state);
        match h.restarts {
            Some(1) => container.push_str(", restarted once by the engine"),
            Some(n) if n > 1 => container.push_str(&format!(", restarted {n} times by the engine")),
            _ => {}
        }
        if let Some(started) = h.started_at {
            container.push_str(&format!(", up since {}", second(started)));
        }
        printer.data(&container);
    }
    if let Some(c) = &status.candidate {
        let mut line = format!("  candidate  release {} in the {} slot", c.release, c.slot);
        if c.percent > 0 {
            line.push_str(&format!(", split: {}% of new clients", c.percent));
        }
        if !c.preview_hosts.is_empty() {
            line.push_str(&format!(", preview at {}", c.preview_hosts.join(", ")));
        } else if c.percent == 0 {
            line.push_str(&format!(
                ", preview with the header `X-Shipit-Slot: {}`",
                c.slot
            ));
        }
        line.push_str(&format!(", {} in flight", c.in_flight));
        printer.data(&line);
    }
    if let Some(gate) = &status.gate {
        if let Some(p) = &gate.paused {
            let state = if p.expired {
                "its timeout passed: requests are answered 503 until `shipit resume`".to_string()
            } else {
                format!("{} requests held, until {}", p.held, second(p.deadline))
            };
            printer.data(&format!("  PAUSED     {state}"));
        }
        if let Some(m) = &gate.maintenance {
            printer.data(&format!(
                "  MAINTENANCE since {}: every request answered 503{}",
                second(m.since),
                m.message
                    .as_deref()
                    .map_or(String::new(), |text| format!(" ({text:?})"))
            ));
        }
    }
    if let Some(s) = &status.staged {
        printer.data(&format!(
            "  staged     release {} ({}) in the {} slot, waiting for `shipit promote`",
            s.release, s.version, s.slot
        ));
        if let Some(preview) = &s.preview {
            printer.data(&format!("  preview    {preview}"));
        }
    }
}

/// The health of the live slot in one line: healthy, or unhealthy since when and why.
fn health_line(h: &SlotHealth) -> String {
    let mut line = if h.healthy {
        format!("healthy ({})", h.probe)
    } else {
        let since = h
            .unhealthy_since
            .map_or_else(|| "unknown".to_string(), |t| second(t).to_string());
        format!("UNHEALTHY since {since}: {}", h.probe)
    };
    if let Some(failed) = h.failed_requests
        && failed > 0
    {
        line.push_str(&format!(
            "; the edge failed {failed} requests to it since it started"
        ));
    }
    line
}

fn second(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).unwrap_or(t)
}
