//! `envstore submit`: the build id on standard output; with `--wait`, the
//! build followed to its end, a one-line summary when it succeeded, and on
//! Ctrl-C the word that the build goes on and how to follow or cancel it.

use std::path::Path;

use envstore_client::{Client, Downloads};
use envstore_server::args::ServerArgs;
use tokio::signal::unix::{SignalKind, signal};

use super::packages_summary;
use super::types::BuildView;

/// The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells use.
const INTERRUPTED: i32 = 130;

pub(crate) async fn run(
    environment: &str,
    file: &Path,
    wait: bool,
    server: ServerArgs,
) -> anyhow::Result<()> {
    let client = Client::new(&server.server, server.token)?;
    let (body, json) = envstore_client::read_spec_file(file)?;
    if !wait {
        let build_id = client.submit(environment, body, json).await?;
        println!("{build_id}");
        return Ok(());
    }
    // Listening from before the build id is printed: a Ctrl-C from then on
    // is always answered with what to do, never lost to the default action.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let submitted = tokio::select! {
        submitted = client.submit(environment, body, json) => Some(submitted),
        _ = interrupt.recv() => None,
    };
    let Some(submitted) = submitted else {
        eprintln!(
            "interrupted before the server answered: the build may have been queued all the same (`envstore env show {environment}` lists its builds)"
        );
        std::process::exit(INTERRUPTED);
    };
    let build_id = submitted?;
    println!("{build_id}");
    let followed = tokio::select! {
        followed = client.follow(&build_id) => Some(followed),
        _ = interrupt.recv() => None,
    };
    // The follow (and its progress bar) is dropped here, before printing.
    let Some(followed) = followed else {
        eprintln!("{}", interrupted_text(&build_id));
        std::process::exit(INTERRUPTED);
    };
    let followed = followed?;
    envstore_client::build_outcome(&followed.build)?;
    let prefix = match client.environment(environment).await {
        Ok(view)
            if view
                .current_build
                .as_ref()
                .is_some_and(|current| current.id == followed.build.id) =>
        {
            view.prefix
        }
        _ => None,
    };
    eprintln!(
        "{}",
        summary(
            environment,
            &followed.build,
            followed.downloads,
            prefix.as_deref()
        )
    );
    Ok(())
}

/// What Ctrl-C during `--wait` says: the build is not stopped.
fn interrupted_text(build_id: &str) -> String {
    format!(
        "interrupted: build {build_id} goes on on the server (Ctrl-C stops following it, not the build)\n  follow it again: envstore builds log {build_id} --follow\n  cancel it:       envstore builds cancel {build_id}"
    )
}

/// The one line a succeeded `--wait` ends with: packages, how many came
/// from the package cache and how many were downloaded (as the build's
/// events told), the time from submission to the end, and how to use it.
fn summary(
    environment: &str,
    build: &BuildView,
    downloads: Option<Downloads>,
    prefix: Option<&str>,
) -> String {
    let packages = match (downloads, &build.packages) {
        (Some(downloads), _) => format!("{} packages", downloads.packages),
        (None, Some(packages)) => packages_summary(packages),
        (None, None) => "no packages".to_owned(),
    };
    let reuse = if build.reused.prefix {
        " (the prefix existed already: nothing downloaded or linked)".to_owned()
    } else {
        match downloads {
            Some(downloads) => format!(
                " ({} from the package cache, {} downloaded)",
                downloads.cached, downloads.downloaded
            ),
            None => String::new(),
        }
    };
    let took = build
        .finished_at
        .map(|end| format!(" in {}", super::output::duration(end - build.created_at)))
        .unwrap_or_default();
    let usage = match prefix {
        Some(prefix) => format!(
            "use it with `conda activate {prefix}` on the server, or `envstore lock {environment}` for its lockfile"
        ),
        None => format!("`envstore lock {environment}` gives its lockfile"),
    };
    format!("{environment} is ready: {packages}{reuse}{took}; {usage}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cli::types::{BuildStatus, ReuseView};

    fn build(reused_prefix: bool) -> BuildView {
        BuildView {
            id: "b1".to_owned(),
            namespace: "team".to_owned(),
            environment: "analysis".to_owned(),
            status: BuildStatus::Succeeded,
            spec_hash: "s".to_owned(),
            spec: None,
            lock_hash: Some("l".to_owned()),
            reused: ReuseView {
                lock: reused_prefix,
                prefix: reused_prefix,
            },
            phases: Vec::new(),
            error: None,
            waiting: None,
            created_at: 1_000,
            started_at: Some(1_100),
            finished_at: Some(4_240),
            prefix_collected_at: None,
            packages: Some(BTreeMap::from([("linux-64".to_owned(), Vec::new())])),
            links: BTreeMap::new(),
        }
    }

    #[test]
    fn the_summary_tells_packages_reuse_time_and_use() {
        let downloads = Downloads {
            packages: 26,
            cached: 20,
            downloaded: 6,
        };
        assert_eq!(
            summary(
                "team/analysis",
                &build(false),
                Some(downloads),
                Some("/srv/prefixes/abc")
            ),
            "team/analysis is ready: 26 packages (20 from the package cache, 6 downloaded) in 3.2 s; use it with `conda activate /srv/prefixes/abc` on the server, or `envstore lock team/analysis` for its lockfile"
        );
        assert_eq!(
            summary("team/analysis", &build(true), None, None),
            "team/analysis is ready: 0 packages on linux-64 (the prefix existed already: nothing downloaded or linked) in 3.2 s; `envstore lock team/analysis` gives its lockfile"
        );
        let text = interrupted_text("b1");
        assert!(text.contains("goes on on the server"), "{text}");
        assert!(text.contains("envstore builds cancel b1"), "{text}");
    }
}
