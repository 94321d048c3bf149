//! `envstore gc`: what garbage collection did, or would do, for a person.

use std::fmt::Write;

use envstore_workers::GcReport;

/// Bytes as a person reads them (binary units).
pub fn human_bytes(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// The report as printed: each kind of thing removed, then the total.
pub fn render_report(report: &GcReport, keep_builds: usize) -> String {
    let (will, did) = if report.dry_run {
        ("would ", "would ")
    } else {
        ("", "")
    };
    let mut text = String::new();
    if report.dry_run {
        let _ = writeln!(text, "dry run: nothing is removed");
    }
    let _ = writeln!(
        text,
        "{will}release the prefixes of {} builds (keeping the newest {keep_builds} per environment and each current build; their lockfiles and logs stay)",
        report.released_builds.len()
    );
    for build in &report.released_builds {
        let _ = writeln!(
            text,
            "  {}/{} build {} (lock {})",
            build.namespace,
            build.environment,
            build.id,
            build.lock_hash.get(..16).unwrap_or(&build.lock_hash)
        );
    }
    let freed: u64 = report
        .prefixes
        .iter()
        .map(|prefix| prefix.freed_bytes)
        .sum();
    let apparent: u64 = report
        .prefixes
        .iter()
        .map(|prefix| prefix.apparent_bytes)
        .sum();
    let _ = writeln!(
        text,
        "{did}remove {} prefixes: {} freed ({} of files, the rest shared with the package cache)",
        report.prefixes.len(),
        human_bytes(freed),
        human_bytes(apparent)
    );
    for prefix in &report.prefixes {
        let _ = writeln!(
            text,
            "  {} {}{}",
            prefix.path.display(),
            human_bytes(prefix.freed_bytes),
            if prefix.complete {
                ""
            } else {
                " (unfinished leftover)"
            }
        );
    }
    for busy in &report.busy_prefixes {
        let _ = writeln!(text, "  kept {}: a worker is building it", busy.display());
    }
    let packed: u64 = report.packed_prefixes.iter().map(|(_, size)| size).sum();
    let _ = writeln!(
        text,
        "{did}remove {} packed prefixes from the store: {}",
        report.packed_prefixes.len(),
        human_bytes(packed)
    );
    for (key, size) in &report.packed_prefixes {
        let _ = writeln!(text, "  {key} {}", human_bytes(*size));
    }
    let _ = writeln!(
        text,
        "{did}clean deleted environments: {} links, the logs and records of {} builds",
        report.links.len(),
        report.purged_builds
    );
    for link in &report.links {
        let _ = writeln!(text, "  {}", link.display());
    }
    let cached: u64 = report.cached_packages.iter().map(|(_, size)| size).sum();
    let _ = writeln!(
        text,
        "{did}remove {} idle package cache entries no prefix links: {}; the package cache keeps {}",
        report.cached_packages.len(),
        human_bytes(cached),
        human_bytes(report.package_cache_bytes)
    );
    for (path, size) in &report.cached_packages {
        let _ = writeln!(text, "  {} {}", path.display(), human_bytes(*size));
    }
    let over: u64 = report
        .over_budget_packages
        .iter()
        .map(|(_, size)| size)
        .sum();
    let _ = writeln!(
        text,
        "{did}remove {} package cache entries no complete prefix uses, oldest used first, to bring the cache under its {} budget: {}",
        report.over_budget_packages.len(),
        human_bytes(report.cache_budget),
        human_bytes(over)
    );
    for (path, size) in &report.over_budget_packages {
        let _ = writeln!(text, "  {} {}", path.display(), human_bytes(*size));
    }
    for busy in &report.busy_cache_entries {
        let _ = writeln!(
            text,
            "  kept {}: another process is using it",
            busy.display()
        );
    }
    let temporary: u64 = report.temporaries.iter().map(|(_, size)| size).sum();
    let _ = writeln!(
        text,
        "{did}remove {} temporary files and folders that stopped processes left: {}",
        report.temporaries.len(),
        human_bytes(temporary)
    );
    for (path, size) in &report.temporaries {
        let _ = writeln!(text, "  {} {}", path.display(), human_bytes(*size));
    }
    let _ = writeln!(
        text,
        "{}: {}",
        if report.dry_run {
            "would free"
        } else {
            "freed"
        },
        human_bytes(report.freed_bytes())
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_person_would_say_them() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn a_dry_run_says_would_and_an_empty_collection_frees_nothing() {
        let report = GcReport {
            dry_run: true,
            ..GcReport::default()
        };
        let text = render_report(&report, 3);
        assert!(text.starts_with("dry run: nothing is removed\n"), "{text}");
        assert!(
            text.contains("would release the prefixes of 0 builds (keeping the newest 3"),
            "{text}"
        );
        assert!(text.ends_with("would free: 0 B\n"), "{text}");
        let done = render_report(&GcReport::default(), 3);
        assert!(!done.contains("would"), "{done}");
    }
}
