//! `envstore env`: list, show with history, rollback, delete, diff, spec.

use std::collections::BTreeMap;

use super::types::diff::{Change, PlatformDiff, diff};
use super::types::{
    BuildHistoryEntry, BuildStatus, BuildView, EnvironmentView, EnvironmentsPage, LockedPackage,
};
use anyhow::Context;
use envstore_client::Client;
use envstore_server::args::resources::{ClientArgs, EnvCommand};
use serde::Serialize;

use super::output::{self, Table};
use super::{client, packages_summary};

pub(crate) async fn run(command: EnvCommand) -> anyhow::Result<()> {
    match command {
        EnvCommand::List { namespace, client } => list(namespace, client).await,
        EnvCommand::Show {
            environment,
            client,
        } => show(&environment, client).await,
        EnvCommand::Rollback {
            environment,
            build_id,
            client,
        } => rollback(&environment, &build_id, client).await,
        EnvCommand::Delete {
            environment,
            client,
        } => delete(&environment, client).await,
        EnvCommand::Diff { from, to, client } => compare(&from, to.as_deref(), client).await,
        EnvCommand::Spec {
            environment,
            build,
            client,
        } => spec(&environment, build.as_deref(), client).await,
    }
}

async fn list(namespace: Option<String>, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let namespaces = match &namespace {
        Some(namespace) => vec![namespace.clone()],
        None => client
            .namespaces()
            .await?
            .into_iter()
            .map(|namespace| namespace.name)
            .collect(),
    };
    let mut pages = Vec::new();
    for namespace in namespaces {
        let environments = client.environments(&namespace).await?;
        pages.push(EnvironmentsPage {
            namespace,
            environments,
            next_after: None,
        });
    }
    if args.json {
        // One namespace: its page, as the server answers; all: every page.
        return match (&namespace, pages.first()) {
            (Some(_), Some(page)) => output::json(page),
            _ => output::json(&pages),
        };
    }
    let mut table = Table::new(&["ENVIRONMENT", "CURRENT BUILD", "LATEST", "UPDATED"]);
    for page in &pages {
        for environment in &page.environments {
            let latest = match (&environment.latest_build_id, environment.latest_status) {
                (Some(latest), Some(status))
                    if environment.current_build_id.as_deref() == Some(latest.as_str()) =>
                {
                    status.to_string()
                }
                (Some(latest), Some(status)) => format!("{status} {latest}"),
                _ => "-".to_owned(),
            };
            table.row(vec![
                format!("{}/{}", page.namespace, environment.name),
                output::or_dash(environment.current_build_id.as_deref()),
                latest,
                output::or_dash(environment.latest_created_at.map(output::when)),
            ]);
        }
    }
    if pages.iter().all(|page| page.environments.is_empty()) {
        match namespace {
            Some(namespace) => eprintln!("no environments in {namespace}"),
            None => eprintln!("no environments in the namespaces you may see"),
        }
        return Ok(());
    }
    table.print();
    Ok(())
}

/// `env show --json`: the environment as the server shows it, with its
/// builds as the builds listing gives them (who submitted each).
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    environment: &'a EnvironmentView,
    builds: &'a [BuildHistoryEntry],
}

async fn show(environment: &str, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let view = client.environment(environment).await?;
    let builds = client.environment_builds(environment).await?;
    if args.json {
        return output::json(&Shown {
            environment: &view,
            builds: &builds.builds,
        });
    }
    let mut fields = vec![("created", output::when(view.created_at))];
    match &view.current_build {
        Some(current) => {
            fields.push((
                "current build",
                format!(
                    "{} ({}, {})",
                    current.id,
                    current.status,
                    output::when(current.finished_at.unwrap_or(current.created_at))
                ),
            ));
            if let Some(lock) = &current.lock_hash {
                fields.push(("lock", lock.clone()));
            }
            if let Some(packages) = &current.packages {
                fields.push(("packages", packages_summary(packages)));
            }
        }
        None => fields.push(("current build", "none yet".to_owned())),
    }
    if let Some(prefix) = &view.prefix {
        fields.push(("prefix", format!("{prefix} (on the server)")));
    }
    println!("{}/{}", view.namespace, view.name);
    print!("{}", output::fields(&fields));
    println!();
    let mut table = Table::new(&["", "BUILD", "STATUS", "SUBMITTED", "TOOK", "BY"]);
    for build in &builds.builds {
        table.row(vec![
            if build.current { "*" } else { "" }.to_owned(),
            build.id.clone(),
            build.status.to_string(),
            output::when(build.created_at),
            output::took(
                build.started_at.or(Some(build.created_at)),
                build.finished_at,
            ),
            output::or_dash(build.submitted_by.as_deref()),
        ]);
    }
    table.print();
    Ok(())
}

async fn rollback(environment: &str, build_id: &str, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let set = client.set_current(environment, build_id).await?;
    if args.json {
        return output::json(&set);
    }
    match &set.rebuild {
        Some(rebuild) => println!(
            "the prefix of build {build_id} was collected: build {} restores it from the lock and makes it current when it succeeds (`envstore builds log {} --follow`); until then {environment} stays on {}",
            rebuild.build_id,
            rebuild.build_id,
            set.current_build_id.as_deref().unwrap_or("no build"),
        ),
        None => println!(
            "{environment} is now at build {}{}",
            set.current_build_id.as_deref().unwrap_or(build_id),
            set.prefix
                .as_deref()
                .map(|prefix| format!(" (prefix {prefix})"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

async fn delete(environment: &str, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let deleted = client.delete_environment(environment).await?;
    if args.json {
        return output::json(&deleted);
    }
    println!(
        "deleted {}/{}: {} builds hidden, {} stopped; {}",
        deleted.namespace, deleted.name, deleted.builds, deleted.stopped_builds, deleted.cleanup
    );
    Ok(())
}

/// `env diff --json`: the two builds and each platform's changes.
#[derive(Serialize)]
struct Compared<'a> {
    from: &'a str,
    to: &'a str,
    platforms: BTreeMap<&'a str, PlatformDiff<'a>>,
}

async fn compare(from: &str, to: Option<&str>, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let (old, new) = match to {
        Some(to) => (client.build(from).await?, client.build(to).await?),
        None => current_and_previous(&client, from).await?,
    };
    let (Some(old_packages), Some(new_packages)) = (&old.packages, &new.packages) else {
        anyhow::bail!(
            "both builds need a lock to be compared: {} has none",
            if old.packages.is_none() {
                &old.id
            } else {
                &new.id
            }
        );
    };
    let platforms = diff(old_packages, new_packages);
    if args.json {
        return output::json(&Compared {
            from: &old.id,
            to: &new.id,
            platforms,
        });
    }
    println!(
        "from build {} ({}/{}, {}) to build {} ({}/{}, {})",
        old.id,
        old.namespace,
        old.environment,
        output::when(old.created_at),
        new.id,
        new.namespace,
        new.environment,
        output::when(new.created_at)
    );
    let describe = |package: &LockedPackage| format!("{} ({})", package.version, package.build);
    for (platform, changes) in &platforms {
        println!(
            "\n{platform}: {} added, {} removed, {} changed, {} unchanged",
            changes.count("added"),
            changes.count("removed"),
            changes.count("changed"),
            changes.unchanged
        );
        if changes.changes.is_empty() {
            continue;
        }
        let mut table = Table::new(&["", "PACKAGE", "BEFORE", "AFTER"]);
        for change in &changes.changes {
            let (mark, before, after) = match change {
                Change::Added { package } => ("+", "-".to_owned(), describe(package)),
                Change::Removed { package } => ("-", describe(package), "-".to_owned()),
                Change::Changed { from, to } => ("~", describe(from), describe(to)),
            };
            table.row(vec![
                mark.to_owned(),
                change.name().to_owned(),
                before,
                after,
            ]);
        }
        table.print();
    }
    Ok(())
}

/// The current build of `NAMESPACE/NAME` and the succeeded build before it.
async fn current_and_previous(
    client: &Client,
    environment: &str,
) -> anyhow::Result<(BuildView, BuildView)> {
    anyhow::ensure!(
        environment.contains('/'),
        "'{environment}' is not NAMESPACE/NAME: compare two builds with `envstore env diff FROM_BUILD TO_BUILD`"
    );
    let view = client.environment(environment).await?;
    let current = view
        .current_build
        .with_context(|| format!("{environment} has no current build"))?;
    // The history is newest first: the first succeeded build after the current one.
    let previous = view
        .history
        .iter()
        .skip_while(|build| build.id != current.id)
        .skip(1)
        .find(|build| build.status == BuildStatus::Succeeded && build.lock_hash.is_some())
        .with_context(|| {
            format!(
                "{environment} has no succeeded build before its current one ({}): name two builds to compare",
                current.id
            )
        })?;
    let previous = client.build(&previous.id).await?;
    Ok((previous, current))
}

async fn spec(environment: &str, build: Option<&str>, args: ClientArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let build = match build {
        Some(build_id) => {
            let build = client.build(build_id).await?;
            anyhow::ensure!(
                format!("{}/{}", build.namespace, build.environment) == environment,
                "build {build_id} is of {}/{}, not of {environment}",
                build.namespace,
                build.environment
            );
            build
        }
        None => client
            .environment(environment)
            .await?
            .current_build
            .with_context(|| {
                format!("{environment} has no current build: name one with --build")
            })?,
    };
    if args.json {
        let spec = build.spec.as_ref().with_context(|| {
            format!(
                "build {} has no canonical spec (it came from a lockfile)",
                build.id
            )
        })?;
        return output::json(spec);
    }
    let (_, text) = client.build_spec(&build.id).await?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}
