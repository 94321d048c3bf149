//! `envstore builds`: show, log (`--follow`), cancel.

use std::io::Write as _;

use super::types::{BuildStatus, BuildView};
use envstore_client::{LogEnd, LogEvent};
use envstore_server::args::resources::{BuildsCommand, ClientArgs};
use serde::Serialize;

use super::output::{self, Table};
use super::{client, packages_summary};

pub(crate) async fn run(command: BuildsCommand) -> anyhow::Result<()> {
    match command {
        BuildsCommand::Show { id, client } => show(&id, client).await,
        BuildsCommand::Log { id, follow, client } => log(&id, follow, client).await,
        BuildsCommand::Cancel { id, client } => cancel(&id, client).await,
    }
}

async fn show(id: &str, args: ClientArgs) -> anyhow::Result<()> {
    let build = client(&args)?.build(id).await?;
    if args.json {
        return output::json(&build);
    }
    print!("{}", describe(&build));
    Ok(())
}

/// A build as people read it: its fields, then its phases.
fn describe(build: &BuildView) -> String {
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    let mut fields = vec![
        (
            "environment",
            format!("{}/{}", build.namespace, build.environment),
        ),
        ("status", build.status.to_string()),
        (
            "submitted",
            format!(
                "{} ({})",
                output::when(build.created_at),
                output::iso(build.created_at)
            ),
        ),
        (
            "took",
            output::took(Some(build.created_at), build.finished_at),
        ),
        ("spec hash", build.spec_hash.clone()),
        ("lock", output::or_dash(build.lock_hash.as_deref())),
        (
            "reused",
            format!(
                "lock: {}, prefix: {}",
                yes_no(build.reused.lock),
                yes_no(build.reused.prefix)
            ),
        ),
    ];
    if let Some(packages) = &build.packages {
        fields.push(("packages", packages_summary(packages)));
    }
    if let Some(collected) = build.prefix_collected_at {
        fields.push((
            "prefix",
            format!(
                "collected {} (making the build current rebuilds it)",
                output::when(collected)
            ),
        ));
    }
    if let Some(error) = &build.error {
        fields.push(("error", error.clone()));
    }
    let mut text = format!("build {}\n{}", build.id, output::fields(&fields));
    if !build.phases.is_empty() {
        let mut table = Table::new(&["PHASE", "STARTED", "TOOK", "DETAIL"]);
        for phase in &build.phases {
            table.row(vec![
                phase.phase.to_string(),
                output::when(phase.started_at),
                match phase.duration_ms {
                    Some(ms) => output::duration(ms),
                    None => "running".to_owned(),
                },
                output::or_dash(phase.detail.as_deref()),
            ]);
        }
        text.push('\n');
        text.push_str(&table.render());
    }
    text
}

/// `builds log --json`: the log whole, or with --follow one event a line.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LogJson<'a> {
    Log { build_id: &'a str, log: &'a str },
    Line { line: &'a str },
    Reset,
    End { build: &'a BuildView },
}

async fn log(id: &str, follow: bool, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    if !follow {
        let log = client.build_log(id).await?;
        if args.json {
            return output::json(&LogJson::Log {
                build_id: id,
                log: &log,
            });
        }
        print!("{log}");
        return Ok(());
    }
    let json = args.json;
    let print_json = |event: &LogJson<'_>| {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
    };
    let end = client
        .follow_log(id, |event| {
            match (&event, json) {
                (LogEvent::Line(line), false) => println!("{line}"),
                (LogEvent::Line(line), true) => print_json(&LogJson::Line { line }),
                (LogEvent::Reset, false) => {
                    eprintln!("(the build was tried again: its complete log follows)");
                }
                (LogEvent::Reset, true) => print_json(&LogJson::Reset),
            }
            let _ = std::io::stdout().flush();
        })
        .await?;
    match end {
        LogEnd::Ended => {}
        LogEnd::Closed(reason) => anyhow::bail!(
            "the server closed the log stream before the build ended ({reason}): run the command again to go on following it"
        ),
        LogEnd::Broken => anyhow::bail!(
            "the log stream broke off before the build ended: run the command again to go on following it"
        ),
    }
    let build = client.build(id).await?;
    if json {
        print_json(&LogJson::End { build: &build });
    } else {
        eprintln!("build {} {}", build.id, build.status);
    }
    envstore_client::build_outcome(&build)
}

async fn cancel(id: &str, args: ClientArgs) -> anyhow::Result<()> {
    let cancelled = client(&args)?.cancel_build(id).await?;
    if args.json {
        return output::json(&cancelled);
    }
    match (cancelled.status, cancelled.cancelling) {
        (_, true) => println!(
            "build {} is stopping: its worker stops it within a second and removes its unfinished prefix",
            cancelled.build_id
        ),
        (Some(BuildStatus::Cancelled), false) => {
            println!("build {} cancelled", cancelled.build_id);
        }
        (Some(status), false) => println!("build {} is {status}", cancelled.build_id),
        (None, false) => println!(
            "build {} had ended meanwhile: nothing to cancel",
            cancelled.build_id
        ),
    }
    Ok(())
}
