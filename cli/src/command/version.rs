//! `shipit version plan|apply`: the semantic versions of the library modules.

use shipit_pipeline::config::Config;
use shipit_pipeline::version::{self, Action, Applied, ApplyOptions, Plan};

use super::load_config;
use crate::args::{Global, VersionCommand};
use crate::exit::{self, Failure};
use crate::printer::Printer;

pub fn run(global: &Global, command: VersionCommand, printer: Printer) -> Result<(), Failure> {
    let config = load_config(global)?;
    if config.modules.is_empty() {
        return Err(Failure::new(
            exit::CONFIG,
            format!("{}: no modules are configured", config.path.display()),
        )
        .hint(
            "add a [modules.<name>] table with the module's `path` (see templates/shipit.toml)",
        ));
    }
    match command {
        VersionCommand::Plan { json } => {
            let plan = version::plan(&config)?;
            if json {
                printer.json(&plan);
            } else {
                print_plan(printer, &plan);
            }
            Ok(())
        }
        VersionCommand::Apply {
            dry_run,
            no_commit,
            no_tag,
            push,
            json,
        } => apply(&config, dry_run, no_commit, no_tag, push, json, printer),
    }
}

fn apply(
    config: &Config,
    dry_run: bool,
    no_commit: bool,
    no_tag: bool,
    push: bool,
    json: bool,
    printer: Printer,
) -> Result<(), Failure> {
    let plan = version::plan(config)?;
    let options = ApplyOptions {
        dry_run,
        commit: !no_commit,
        tag: !no_tag,
        date: None,
        push: (push || config.versioning.push).then(|| config.versioning.remote.clone()),
    };
    let applied = version::apply(config, &plan, &options)?;
    if json {
        printer.json(&applied);
        return Ok(());
    }
    if !plan.has_work() {
        printer.data("nothing to release: every module keeps its version");
        return Ok(());
    }
    print_applied(printer, &plan, &applied);
    Ok(())
}

/// The plan as a table, then each module's commits and notes.
pub fn print_plan(printer: Printer, plan: &Plan) {
    let width = plan
        .modules
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0)
        .max("MODULE".len());
    let versions = plan
        .modules
        .iter()
        .flat_map(|m| [m.current.to_string().len(), m.next.to_string().len()])
        .max()
        .unwrap_or(0)
        .max("CURRENT".len());
    printer.data(&format!(
        "{:<width$}  {:<versions$}  {:<versions$}  REASON",
        "MODULE", "CURRENT", "NEXT"
    ));
    for m in &plan.modules {
        let next = match m.action {
            Action::Keep => "=".to_string(),
            _ => m.next.to_string(),
        };
        printer.data(&format!(
            "{:<width$}  {:<versions$}  {:<versions$}  {}",
            m.name, m.current, next, m.reason
        ));
    }
    for m in &plan.modules {
        if m.commits.is_empty() && m.notes.is_empty() {
            continue;
        }
        printer.data("");
        match &m.last_tag {
            Some(tag) => printer.data(&format!(
                "{} ({}): {} since {tag}",
                m.name,
                m.path,
                count(m.commits.len(), "commit")
            )),
            None => printer.data(&format!("{} ({}):", m.name, m.path)),
        }
        for c in &m.commits {
            // The level the commit amounts to on this version (0.x rules applied).
            let level = c.bump.effective(&m.current);
            printer.data(&format!(
                "  {}  {:<5}  {}",
                c.short,
                level.as_str(),
                c.summary
            ));
        }
        for note in &m.notes {
            printer.data(&format!("  note: {note}"));
        }
    }
}

fn print_applied(printer: Printer, plan: &Plan, applied: &Applied) {
    let would = |done: &str, planned: &str| {
        if applied.dry_run {
            planned.to_string()
        } else {
            done.to_string()
        }
    };
    for m in plan.modules.iter().filter(|m| m.action != Action::Keep) {
        let what = match m.action {
            Action::FirstTag => format!("{} {} (first release)", m.name, m.next),
            _ => format!("{} {} → {}", m.name, m.current, m.next),
        };
        printer.data(&what);
    }
    for file in &applied.files {
        printer.data(&format!(
            "{} {}: {}",
            would("wrote", "would write"),
            file.path,
            file.changes.join(", ")
        ));
    }
    if let Some(commit) = &applied.commit {
        printer.data(&format!("committed {}", &commit[..commit.len().min(12)]));
    } else if applied.dry_run && !applied.files.is_empty() {
        printer.data("would commit the files above");
    }
    if !applied.tags.is_empty() {
        printer.data(&format!(
            "{} {}",
            would("tagged", "would tag"),
            applied.tags.join(", ")
        ));
    }
    for note in &applied.notes {
        printer.info(note);
    }
    if let Some(remote) = &applied.remote {
        if !applied.pushed.is_empty() {
            printer.data(&format!("pushed to {remote}: {}", applied.pushed.join(" ")));
        }
    } else if !applied.dry_run && !applied.tags.is_empty() {
        printer.info(
            "push the release commit and its tags with `git push --follow-tags`, or use \
             `--push` (or `[versioning] push = true`)",
        );
    }
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
