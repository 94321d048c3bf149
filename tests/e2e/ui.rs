//! The web UI as a person uses it: headless Chromium (Debian's `chromium`),
//! driven over WebDriver (Debian's `chromium-driver`), against the real
//! server. It signs in (the header says as whom), submits a spec through the
//! form, watches the build's live log and download progress until the page
//! shows its final state, watches a failing build end on its error, opens
//! the packages, downloads a lockfile, reads the environment's packages,
//! spec and usage, searches which environments hold a package, submits an
//! edited spec, compares the two builds, rolls back, reads the namespace's
//! usage and quotas, gives a member a role in the namespace's settings, and
//! walks the admin pages (tokens of all subjects with revoke, role bindings,
//! policies and quotas, audit log). Then a viewer walks the same pages and
//! finds no action she may not take. A screenshot of each page goes to
//! `target/ui-screenshots/<page>.png`.
//!
//! In CI (`CI` set) a missing browser fails the test; elsewhere
//! `ENVSTORE_SKIP_BROWSER=1` skips it with the reason printed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use envstore_fixtures::DownloadGate;
use envstore_tests::{DemoChannel, TestServer, demo_spec_yaml};
use fantoccini::Locator;

use crate::browser::{BUILD_WAIT, Browser, ELEMENT_WAIT, Pages, screenshot_dir};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

/// The steps of the story, sharing the browser and the server.
struct Story<'a> {
    pages: Pages<'a>,
    screenshots: PathBuf,
    /// Held before a build that must be seen running, so the build waits in
    /// its download phase until its page follows it.
    downloads: DownloadGate,
}

impl<'a> std::ops::Deref for Story<'a> {
    type Target = Pages<'a>;
    fn deref(&self) -> &Pages<'a> {
        &self.pages
    }
}

impl Story<'_> {
    async fn click_link(&self, text: &str) {
        match self
            .browser
            .wait()
            .at_most(ELEMENT_WAIT)
            .for_element(Locator::LinkText(text))
            .await
        {
            Ok(link) => link.click().await.expect("the link is clicked"),
            Err(error) => panic!("no link '{text}' on {}: {error}", self.path().await),
        }
    }

    async fn heading(&self) -> String {
        self.text("main h1").await
    }

    /// Saves the whole page as `<page>.png` (the window made as tall as the
    /// page for the shot, 1366 pixels wide) and says where.
    async fn screenshot(&self, page: &str) {
        let measure = |script: &'static str| async move {
            let value = self
                .browser
                .execute(script, Vec::new())
                .await
                .expect("a measure of the page");
            u32::try_from(value.as_u64().unwrap_or(768))
                .unwrap_or(768)
                .clamp(1, 6000)
        };
        let page_height = measure("return document.documentElement.scrollHeight;")
            .await
            .max(768);
        self.browser
            .set_window_size(1366, page_height)
            .await
            .expect("the window grows");
        // The window's frame takes some of its height: grow it by that much.
        let frame = page_height.saturating_sub(measure("return window.innerHeight;").await);
        self.browser
            .set_window_size(1366, page_height + frame)
            .await
            .expect("the window grows");
        let png = self.browser.screenshot().await.expect("a screenshot");
        self.browser
            .set_window_size(1366, 768)
            .await
            .expect("the window is a laptop's again");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot of {page}");
        let path = self.screenshots.join(format!("{page}.png"));
        fs_err::write(&path, png).expect("the screenshot is saved");
        println!("screenshot of {page}: {}", path.display());
    }

    /// Waits until the browser shows a page whose path (and query) starts
    /// with `prefix`; returns its path.
    async fn arrive(&self, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.browser.current_url().await.expect("a current URL");
            let path = url.path().to_owned();
            let full = match url.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.clone(),
            };
            if full.starts_with(prefix) {
                return path;
            }
            if started.elapsed() > ELEMENT_WAIT {
                let source = self.browser.source().await.unwrap_or_default();
                panic!("the browser stayed on {path}, not {prefix}…:\n{source}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A whole number an attribute of `css` holds (0 when it holds none).
    async fn number(&self, css: &str, name: &str) -> u64 {
        self.attr(css, name)
            .await
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                started.elapsed() < ELEMENT_WAIT,
                "'{css}' never said '{needle}': {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts that the page offers no action a viewer may not take: no
    /// form that changes something in the page's main part, and none of the
    /// action buttons and links of the UI.
    async fn offers_no_action(&self, page: &str) {
        self.find("main h1").await;
        assert_eq!(
            self.count("main form[method='post']").await,
            0,
            "a form that changes something on {page}"
        );
        for action in [
            "#new-environment",
            "#edit-spec",
            "#cancel-form",
            "#delete-form",
            "#visibility-form",
            "#member-form",
            "#policy-form",
            "form[action$='/current']",
            "nav.site-nav a[href='/ui/admin']",
        ] {
            assert_eq!(self.count(action).await, 0, "{action} on {page}");
        }
    }

    /// Waits on a build's page until its live log ends as `expected`;
    /// returns the build id. A build that may end before its page loads
    /// (`live` false: one that fails at once) may be shown ended already;
    /// a `live` one was submitted with the downloads held, and they are
    /// released once its page follows it.
    async fn watch_build(&self, expected: &str, live: bool) -> String {
        let path = self.arrive("/ui/builds/").await;
        let id = path.trim_start_matches("/ui/builds/").to_owned();
        let log = self.find("#log").await;
        let followed = log.attr("data-events").await.unwrap().is_some();
        if live {
            self.downloads.release();
        }
        assert!(followed || !live, "a queued build's log is followed live");
        if followed {
            let started = Instant::now();
            let ended = loop {
                if let Some(ended) = log.attr("data-ended").await.expect("the log's state") {
                    break ended;
                }
                assert!(started.elapsed() < BUILD_WAIT, "build {id} did not end");
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(ended, expected, "{}", log.text().await.unwrap_or_default());
            let received: usize = log
                .attr("data-received")
                .await
                .unwrap()
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            assert!(received > 0, "the live log showed lines");
        }
        let lines = log.text().await.unwrap();
        assert!(lines.contains("solving"), "the log: {lines}");
        let status = self
            .find("#build-status .status")
            .await
            .attr("data-status")
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some(expected));
        // The page shows the build's end without a reload: no cancel
        // button, no phase still running, the state the server renders.
        assert_eq!(
            self.count("#cancel-form").await,
            0,
            "no cancel after the end"
        );
        assert_eq!(
            self.count("#phases tr[data-state='running']").await,
            0,
            "{}",
            self.text("#phases").await
        );
        assert_eq!(
            self.attr("#build-facts", "data-status").await.as_deref(),
            Some(expected)
        );
        id
    }

    /// The session cookie, as the browser sends it.
    async fn session_cookie(&self) -> String {
        let cookie = self
            .browser
            .get_named_cookie(envstore_web::SESSION_COOKIE)
            .await
            .expect("a session cookie");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(
            cookie
                .same_site()
                .map(|same_site| same_site.to_string())
                .as_deref(),
            Some("Strict")
        );
        format!("{}={}", cookie.name(), cookie.value())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_builds_compares_and_rolls_back_an_environment_in_chromium() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let screenshots = screenshot_dir();
    fs_err::create_dir_all(&screenshots).expect("the screenshot folder");
    let client = browser.client.clone();
    // The story runs in its own task so the browser closes whatever happens.
    let outcome = tokio::spawn(async move {
        let channel = DemoChannel::start().await;
        let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
        assert_eq!(
            server.create_namespace("team").await.status(),
            StatusCode::CREATED
        );
        let story = Story {
            pages: Pages {
                browser: &client,
                server: &server,
            },
            screenshots,
            downloads: channel.downloads.clone(),
        };
        story_steps(&story).await;
        server.stop().await;
    })
    .await;
    browser.close().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

async fn story_steps(story: &Story<'_>) {
    let server = story.server;

    // Signing in: every page sends a person without a session there first.
    story.goto("/").await;
    assert_eq!(story.path().await, "/ui/sign-in");
    story.screenshot("sign-in").await;
    story.fill("#token", "not-a-token").await;
    story.click("form.stacked button[type=submit]").await;
    assert!(
        story.text("[role=alert]").await.contains("not valid"),
        "a wrong token is refused readably"
    );
    story.fill("#token", &server.token).await;
    story.click("form.stacked button[type=submit]").await;
    story.arrive("/ui/namespaces").await;
    assert_eq!(story.heading().await, "Namespaces");
    story.session_cookie().await;
    let signed_in = story.text("#signed-in-as").await;
    assert!(
        signed_in.contains("Signed in as") && signed_in.contains(envstore_api::BOOTSTRAP_SUBJECT),
        "{signed_in}"
    );
    assert_eq!(
        story.count("nav.site-nav a[href='/ui/admin']").await,
        1,
        "a server admin is offered the admin pages"
    );
    story.screenshot("namespaces").await;

    // A new environment, through the form.
    story.click_link("team").await;
    story.arrive("/ui/namespaces/team").await;
    assert_eq!(story.heading().await, "team");
    story.click_link("New environment").await;
    story.arrive("/ui/namespaces/team/submit").await;
    story.fill("#name", "analysis").await;
    story.fill("#spec", &demo_spec_yaml("demo")).await;
    story.screenshot("submit").await;
    story.downloads.hold();
    story.click("form.stacked button[type=submit]").await;

    // Its build, followed live until it succeeds: the download's progress
    // in bytes and packages, then every phase finished.
    let first = story.watch_build("succeeded", true).await;
    assert!(
        story
            .number("#download-progress", "data-packages-total")
            .await
            > 0
    );
    assert!(story.number("#download-progress", "data-bytes-total").await > 0);
    assert!(story.number("#download-progress", "data-bytes-done").await > 0);
    let progress = story.text("#download-text").await;
    assert!(
        progress.contains("B of ")
            && progress.contains("packages (")
            && progress.contains("cached"),
        "{progress}"
    );
    assert!(story.count("#phases tr[data-state='finished']").await >= 3);
    assert!(
        !story
            .text("#phases")
            .await
            .contains("No phase has started yet")
    );
    assert!(
        story
            .count("#build-files a[data-format='conda-lock']")
            .await
            == 1
    );
    story.screenshot("build-live").await;
    story.click("#show-result").await;
    story.find("#log:not([data-events])").await;
    assert!(story.text("#build-phase").await.contains("publishing"));
    story.screenshot("build").await;

    // The lockfile, downloaded through the page's link with the session.
    let href = story
        .find("a[data-format='conda-lock']")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("a link");
    let cookie = story.session_cookie().await;
    let response = server
        .client
        .get(server.url(&href))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    rattler_conda_lock::Document::parse(&text).expect("a conda-lock v1 document");
    let conda_lock: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(conda_lock["metadata"]["platforms"][0], "linux-64");
    let response = server.client.get(server.url(&href)).send().await.unwrap();
    assert_eq!(
        response.url().path(),
        "/ui/sign-in",
        "not without the session"
    );

    // Its packages.
    story.click_link("The packages of this build").await;
    story.arrive(&format!("/ui/builds/{first}/packages")).await;
    let packages = story.text("table.packages[data-platform='linux-64']").await;
    let solved_python = envstore_fixtures::demo_expect::demo_solved_python();
    for package in [
        "python",
        &solved_python,
        "numpy",
        "pandas",
        "ipykernel",
        "demo",
    ] {
        assert!(packages.contains(package), "no {package} in {packages}");
    }
    story.fill("#q", "panda").await;
    story.click("form.search button").await;
    story
        .arrive(&format!("/ui/builds/{first}/packages?q=panda"))
        .await;
    let narrowed = story.text("table.packages").await;
    assert!(
        narrowed.contains("pandas") && !narrowed.contains("numpy"),
        "{narrowed}"
    );
    story.screenshot("packages").await;

    // A build that fails ends on its error, its last phase marked failed.
    story.goto("/ui/namespaces/team/submit").await;
    story.fill("#name", "broken").await;
    let [conflict_a, conflict_b] = envstore_fixtures::UNSOLVABLE_SPECS;
    story
        .fill(
            "#spec",
            &format!("channels:\n  - demo\ndependencies:\n  - {conflict_a}\n  - {conflict_b}\nplatforms: [linux-64]\n"),
        )
        .await;
    story.click("form.stacked button[type=submit]").await;
    story.watch_build("failed", false).await;
    let error = story.text("#build-error pre").await;
    assert!(!error.trim().is_empty(), "the error is shown");
    assert_eq!(
        story.count("#phases tr[data-state='failed']").await,
        1,
        "the phase it failed in: {}",
        story.text("#phases").await
    );
    story.screenshot("build-failed").await;

    // The environment, with its current build and its lockfiles.
    story
        .goto("/ui/namespaces/team/environments/analysis")
        .await;
    assert!(
        story
            .text("section[aria-labelledby=current-heading]")
            .await
            .contains(&first)
    );
    assert!(
        story
            .find("a[data-format='explicit'][data-platform='linux-64']")
            .await
            .attr("href")
            .await
            .unwrap()
            .is_some()
    );
    // Its packages, the spec it was submitted with, and how to use it.
    assert!(
        story
            .count("#packages table.packages[data-platform='linux-64'] tbody tr")
            .await
            > 0
    );
    assert_eq!(
        story.attr("#all-packages", "href").await.as_deref(),
        Some(format!("/ui/builds/{first}/packages").as_str())
    );
    let spec = story.text("#spec pre").await;
    assert!(spec.contains("numpy") && spec.contains("demo"), "{spec}");
    let prefix = story.text("#prefix-path").await;
    assert!(prefix.ends_with("team/analysis"), "{prefix}");
    assert!(
        story
            .text("#kernel-name")
            .await
            .starts_with("envstore-team-analysis-")
    );
    let activate = story.text("#activate").await;
    assert!(
        activate.contains(&format!("conda activate {prefix}"))
            && activate.contains(&format!("micromamba activate -p {prefix}")),
        "{activate}"
    );
    let ci = story.text("#ci-commands").await;
    let lockfile_url = format!(
        "{}/api/v1/namespaces/team/environments/analysis/lockfile?format=conda-lock",
        server.base
    );
    assert!(
        ci.contains("envstore lock team/analysis") && ci.contains(&lockfile_url),
        "{ci}"
    );
    let fetched = server
        .client
        .get(&lockfile_url)
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        fetched.status(),
        StatusCode::OK,
        "the CI command's URL works"
    );
    story.screenshot("environment").await;

    // Which environments hold a package, found through the main navigation.
    story.click("nav.site-nav a[href='/ui/packages']").await;
    story.arrive("/ui/packages").await;
    story.fill("#package-name", "numpy").await;
    story.click("#package-search button").await;
    story.arrive("/ui/packages?name=numpy").await;
    let found = story
        .text("table.package-matches tr[data-environment='team/analysis']")
        .await;
    assert!(
        found.contains("numpy") && found.contains("linux-64"),
        "{found}"
    );
    assert_eq!(
        story.count("table.package-matches tbody tr").await,
        1,
        "the failed environment holds nothing"
    );
    story.fill("#package-name", "pan").await;
    story.click("#package-prefix").await;
    story.click("#package-search button").await;
    story.arrive("/ui/packages?name=pan&prefix=true").await;
    assert!(story.text("table.package-matches").await.contains("pandas"));
    story.screenshot("package-search").await;

    // An edited spec: the form is prefilled with the current one.
    story
        .goto("/ui/namespaces/team/environments/analysis")
        .await;
    story.click_link("Edit the spec and submit").await;
    story
        .arrive("/ui/namespaces/team/submit?name=analysis")
        .await;
    let prefilled = story
        .find("#spec")
        .await
        .prop("value")
        .await
        .unwrap()
        .expect("a prefilled spec");
    let mut spec: serde_yaml::Value =
        serde_yaml::from_str(&prefilled).expect("the prefilled spec is YAML");
    let dependencies = spec["dependencies"]
        .as_sequence_mut()
        .expect("dependencies");
    assert!(
        dependencies
            .iter()
            .any(|dependency| dependency.as_str().is_some_and(|d| d.starts_with("python"))),
        "{prefilled}"
    );
    dependencies.retain(|dependency| {
        dependency
            .as_str()
            .is_some_and(|d| !d.starts_with("python") && !d.starts_with("pandas"))
    });
    dependencies.push("python 3.10.*".into());
    story
        .fill("#spec", &serde_yaml::to_string(&spec).unwrap())
        .await;
    story.screenshot("edit").await;
    story.downloads.hold();
    story.click("form.stacked button[type=submit]").await;
    let second = story.watch_build("succeeded", true).await;
    assert_ne!(first, second);

    // The package changes between the two builds.
    story
        .goto("/ui/namespaces/team/environments/analysis")
        .await;
    story.click("form.compare button").await;
    story.arrive("/ui/diff").await;
    assert_eq!(story.heading().await, "Package changes");
    let changes = story.text("table.diff[data-platform='linux-64']").await;
    assert!(
        changes.contains("python")
            && changes.contains(&envstore_fixtures::demo_expect::demo_solved_python())
            && changes.contains("3.10.14"),
        "{changes}"
    );
    let removed = story.text("table.diff tr[data-change=removed]").await;
    assert!(removed.contains("pandas"), "{changes}");
    story.screenshot("diff").await;

    // Rollback: the first build is current again.
    story
        .goto("/ui/namespaces/team/environments/analysis")
        .await;
    story
        .click(&format!("tr[data-build='{first}'] button"))
        .await;
    story
        .arrive("/ui/namespaces/team/environments/analysis?notice=current")
        .await;
    assert!(story.text(".notice").await.contains("is now current"));
    assert!(
        story
            .text("section[aria-labelledby=current-heading]")
            .await
            .contains(&first)
    );
    let (_, environment) = server
        .get_json("/api/v1/namespaces/team/environments/analysis")
        .await;
    assert_eq!(environment["current_build"]["id"], first.as_str());
    story.screenshot("rollback").await;

    // What the namespace uses, reached through the main navigation: its
    // prefixes' disk (one of them held by another namespace too) and its
    // builds, beside its quotas.
    assert_eq!(
        server.create_namespace("data").await.status(),
        StatusCode::CREATED
    );
    let sharing = server
        .submit_yaml("data", "analysis", &demo_spec_yaml("demo"))
        .await;
    assert_eq!(server.wait_for_build(&sharing).await["status"], "succeeded");
    let quota = json!({ "max_disk_bytes": 1u64 << 30, "max_concurrent_builds": 2 });
    let response = server
        .admin_json(
            reqwest::Method::PUT,
            "/api/v1/namespaces/team/quota",
            Some(quota),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    story.click("nav.site-nav a[href='/ui/usage']").await;
    story.arrive("/ui/usage").await;
    assert_eq!(story.heading().await, "Usage");
    let team = "table.usage tbody tr[data-namespace='team']";
    let row = &story.find(team).await;
    let figure = |name: &'static str| async move {
        row.attr(name)
            .await
            .unwrap()
            .and_then(|value| value.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("the row's {name}"))
    };
    assert!(
        figure("data-disk-bytes").await > 0,
        "the prefixes take disk"
    );
    assert!(figure("data-builds").await >= 1, "the builds are counted");
    let disk = story
        .text(&format!("{team} td:nth-of-type(1) strong"))
        .await;
    assert!(
        disk.ends_with('B') && disk != "0 B",
        "a readable size: {disk}"
    );
    let text = row.text().await.unwrap();
    // The real CPython (Debian's python3.11) makes a prefix some 20 MiB, over 1 % of 1 GiB.
    let quota_shown = if envstore_fixtures::demo_expect::linux64_python_is_real() {
        "of 1.0 GiB ("
    } else {
        "of 1.0 GiB (under 1 %)"
    };
    for shown in [
        "succeeded",
        "in 2 prefixes",
        quota_shown,
        "0 of 2 queued or running",
        "shared with 1 other namespace",
    ] {
        assert!(text.contains(shown), "no '{shown}' in {text}");
    }
    let totals = story.find("table.usage tfoot tr.totals").await;
    let total_disk = totals.attr("data-disk-bytes").await.unwrap();
    assert_eq!(
        total_disk.and_then(|value| value.parse::<i64>().ok()),
        Some(figure("data-disk-bytes").await),
        "the prefix both namespaces hold counts once in the total"
    );
    let link = story
        .find(&format!("{team} th a"))
        .await
        .attr("href")
        .await
        .unwrap();
    assert_eq!(link.as_deref(), Some("/ui/namespaces/team"));
    story.screenshot("usage").await;

    // The namespace's settings: its admin gives vera the viewer role.
    story.goto("/ui/namespaces/team").await;
    story.click("#settings-link").await;
    story.arrive("/ui/namespaces/team/settings").await;
    assert_eq!(story.count("#visibility-form").await, 1);
    assert_eq!(story.count("#policy-form").await, 1);
    story.fill("#member-subject", "vera").await;
    story.click("#member-form button").await;
    let member = story
        .wait_text("table.members tr[data-subject='vera']", "viewer")
        .await;
    assert!(member.contains("team"), "{member}");
    story.screenshot("settings").await;

    // The admin pages: every subject's tokens, one revoked from the page.
    let token_for = |subject: &'static str| async move {
        let created = server
            .admin_json(
                reqwest::Method::POST,
                "/api/v1/tokens",
                Some(json!({ "name": format!("{subject}-ui"), "subject": subject })),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let created: Value = created.json().await.unwrap();
        (
            created["token"].as_str().unwrap().to_owned(),
            created["record"]["id"].as_str().unwrap().to_owned(),
        )
    };
    let (vera, _) = token_for("vera").await;
    let (_, bot) = token_for("ci-bot").await;
    story.click("nav.site-nav a[href='/ui/admin']").await;
    story.arrive("/ui/admin").await;
    story.click(".admin-index a[href='/ui/admin/tokens']").await;
    story.arrive("/ui/admin/tokens").await;
    assert!(
        story
            .text("table.tokens tr[data-subject='vera']")
            .await
            .contains("active")
    );
    story.click(&format!("tr[data-token='{bot}'] button")).await;
    story
        .wait_text(&format!("tr[data-token='{bot}']"), "revoked")
        .await;
    let (_, all) = server.get_json("/api/v1/tokens?all=true").await;
    let revoked = all["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["id"] == bot.as_str())
        .expect("the bot's token is listed");
    assert!(revoked["revoked_at"].is_i64(), "{revoked}");
    story.screenshot("admin-tokens").await;

    // Role bindings, a glob bound through the form.
    story
        .click(".admin-nav a[href='/ui/admin/role-bindings']")
        .await;
    story.arrive("/ui/admin/role-bindings").await;
    story.fill("#binding-subject", "greta").await;
    story.fill("#binding-namespace", "team-*").await;
    story.click("#binding-form button").await;
    story.wait_text("table.bindings", "greta").await;
    let (_, bindings) = server.get_json("/api/v1/role-bindings").await;
    assert!(
        bindings["role_bindings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|binding| binding["subject"] == "greta" && binding["namespace"] == "team-*"),
        "{bindings}"
    );
    story.screenshot("admin-role-bindings").await;

    // Each namespace's policy and quota.
    story
        .click(".admin-nav a[href='/ui/admin/namespaces']")
        .await;
    story.arrive("/ui/admin/namespaces").await;
    let team_quota = story
        .text("section.admin-namespace[data-namespace='team']")
        .await;
    assert!(
        team_quota.contains("1.0 GiB") && team_quota.contains("set here"),
        "{team_quota}"
    );
    story.screenshot("admin-namespaces").await;

    // The audit log names what was just done.
    story.click(".admin-nav a[href='/ui/admin/audit']").await;
    story.arrive("/ui/admin/audit").await;
    for action in ["token.revoke", "role.set", "quota.set"] {
        assert!(
            story
                .count(&format!("table.audit tr[data-action='{action}']"))
                .await
                > 0,
            "{action} in the audit log"
        );
    }
    story.screenshot("admin-audit").await;

    // The namespace lists the environment with its builds' states.
    story.goto("/ui/namespaces/team").await;
    let row = story.text("main table tbody tr").await;
    assert!(
        row.contains("analysis") && row.contains("succeeded"),
        "{row}"
    );
    story.screenshot("namespace").await;

    // Signing out ends the session.
    story.click(".sign-out button").await;
    story.arrive("/ui/sign-in").await;
    story.goto("/ui/namespaces").await;
    assert_eq!(story.path().await, "/ui/sign-in");

    // A viewer's walk: vera reads every page of the namespace, and none
    // offers an action her role does not allow.
    story.fill("#token", &vera).await;
    story.click("form.stacked button[type=submit]").await;
    story.arrive("/ui/namespaces").await;
    assert!(story.text("#signed-in-as").await.contains("vera"));
    for page in [
        "/ui/namespaces".to_owned(),
        "/ui/namespaces/team".to_owned(),
        "/ui/namespaces/team/environments/analysis".to_owned(),
        "/ui/namespaces/team/environments/broken".to_owned(),
        format!("/ui/builds/{first}"),
        format!("/ui/builds/{second}"),
        format!("/ui/builds/{first}/packages"),
        "/ui/namespaces/team/settings".to_owned(),
        "/ui/packages?name=numpy".to_owned(),
        "/ui/usage".to_owned(),
    ] {
        story.goto(&page).await;
        story.offers_no_action(&page).await;
        if page == "/ui/namespaces/team/environments/analysis" {
            // What she may do: read the packages, the spec, the commands.
            story.find("#packages").await;
            story.find("#ci-commands").await;
            story.screenshot("viewer-environment").await;
        }
        if page == "/ui/namespaces/team/settings" {
            story.find("#policy-own").await;
            story.screenshot("viewer-settings").await;
        }
    }
    story.goto("/ui/admin/tokens").await;
    assert_eq!(story.heading().await, "Forbidden");
    assert!(story.text("[role=alert]").await.contains("server admins"));
    story.screenshot("viewer-admin-forbidden").await;
    story.goto("/ui/namespaces").await;
    story.click(".sign-out button").await;
    story.arrive("/ui/sign-in").await;
}

/// The UI's pages need a session, its cookie is locked down, its listings
/// search, and its forms refuse what another site or a stale page sends.
/// No browser needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_session_search_and_refuse_forged_forms() {
    let channel = DemoChannel::start().await;
    let server = TestServer::start(vec![channel.allowed_as("demo")]).await;
    assert_eq!(
        server.create_namespace("team").await.status(),
        StatusCode::CREATED
    );
    let build = server
        .submit_yaml("team", "analysis", &demo_spec_yaml("demo"))
        .await;
    let done = server.wait_for_build(&build).await;
    assert_eq!(done["status"], "succeeded");
    let lock_hash = done["lock_hash"].as_str().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let environment = "/ui/namespaces/team/environments/analysis";
    let pages = [
        "/ui/namespaces".to_owned(),
        "/ui/namespaces/team".to_owned(),
        "/ui/namespaces/team/submit".to_owned(),
        environment.to_owned(),
        format!("{environment}/lockfile?format=conda-lock"),
        format!("/ui/builds/{build}"),
        format!("/ui/builds/{build}/log"),
        format!("/ui/builds/{build}/events"),
        format!("/ui/builds/{build}/packages"),
        format!("/ui/diff?from={build}&to={build}"),
        format!("/ui/locks/{lock_hash}/conda-lock.yml"),
        "/ui/usage".to_owned(),
        "/ui/namespaces/team/settings".to_owned(),
        "/ui/admin".to_owned(),
        "/ui/admin/tokens".to_owned(),
        "/ui/admin/role-bindings".to_owned(),
        "/ui/admin/namespaces".to_owned(),
        "/ui/admin/audit".to_owned(),
    ];
    for page in &pages {
        let response = http.get(server.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        let location = response.headers()[LOCATION].to_str().unwrap();
        assert!(
            location.starts_with("/ui/sign-in?next="),
            "{page} -> {location}"
        );
    }
    let home = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(home.headers()[LOCATION], "/ui/");

    // Signing in sets an HttpOnly, SameSite=Strict cookie; Secure behind https.
    let sign_in = |forwarded_proto: Option<&'static str>| {
        let mut request = http
            .post(server.url("/ui/sign-in"))
            .form(&[("token", server.token.as_str())]);
        if let Some(proto) = forwarded_proto {
            request = request.header("x-forwarded-proto", proto);
        }
        request.send()
    };
    let response = sign_in(None).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let secure = sign_in(Some("https")).await.unwrap();
    assert!(
        secure.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure")
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let refused = http
        .post(server.url("/ui/sign-in"))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(SET_COOKIE).is_none());

    // With the session, pages render; the API's problems read as messages.
    let page = http
        .get(server.url(environment))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("forms carry a CSRF token")
        .to_owned();
    let page = |path: String| {
        let request = http.get(server.url(&path)).header(COOKIE, &cookie);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.text().await.unwrap()
        }
    };
    assert!(
        page(format!("{environment}?q=SUCCEEDED"))
            .await
            .contains(&format!("data-build=\"{build}\""))
    );
    assert!(
        page(format!("{environment}?q=nothing-like-it"))
            .await
            .contains("No build matches this search.")
    );
    assert!(
        page("/ui/namespaces/team?q=anal".to_owned())
            .await
            .contains(">analysis</a>")
    );
    assert!(
        page("/ui/namespaces?q=zzz".to_owned())
            .await
            .contains("No namespace matches this search.")
    );
    let usage = page("/ui/usage?q=TEA".to_owned()).await;
    assert!(
        usage.contains("data-namespace=\"team\"") && usage.contains("aria-current=\"page\""),
        "{usage}"
    );
    assert!(
        page("/ui/usage?q=zzz".to_owned())
            .await
            .contains("No namespace matches this search.")
    );
    let missing = http
        .get(server.url("/ui/builds/no-such-build"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let html = missing.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\"")
            && html.contains("no-such-build")
            && html.contains("was not found"),
        "{html}"
    );
    assert!(
        !html.contains("problem+json") && !html.contains("\"detail\""),
        "no raw problem: {html}"
    );

    // A form without the session's CSRF token, or from another site, changes nothing.
    let submit = |fields: Vec<(&'static str, String)>, origin: Option<&str>| {
        let mut request = http
            .post(server.url("/ui/namespaces/team/submit"))
            .header(COOKIE, &cookie)
            .form(&fields);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    let spec = || ("spec", demo_spec_yaml("demo").replace("3.11", "3.10"));
    let name = || ("name", "forged".to_owned());
    let no_token = submit(vec![name(), spec()], None).await.unwrap();
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let wrong_token = submit(vec![name(), spec(), ("csrf", "0".repeat(64))], None)
        .await
        .unwrap();
    assert_eq!(wrong_token.status(), StatusCode::FORBIDDEN);
    let cross_site = submit(
        vec![name(), spec(), ("csrf", csrf.clone())],
        Some("https://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    for forged in [
        "/ui/admin/tokens/revoke",
        "/ui/namespaces/team/settings/visibility",
    ] {
        let response = http
            .post(server.url(forged))
            .header(COOKIE, &cookie)
            .form(&[("id", "x"), ("public_read", "true")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{forged}");
    }
    let rollback = http
        .post(server.url(&format!("{environment}/current")))
        .header(COOKIE, &cookie)
        .form(&[("build_id", build.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), StatusCode::FORBIDDEN);
    let (status, _) = server
        .get_json("/api/v1/namespaces/team/environments/forged")
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no forged form reached the API"
    );

    // The same form with the token goes through; a bad spec reads as a message.
    let accepted = submit(
        vec![name(), spec(), ("csrf", csrf.clone())],
        Some(&server.base),
    )
    .await
    .unwrap();
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    assert!(
        accepted.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/ui/builds/")
    );
    let malformed = submit(
        vec![
            name(),
            ("spec", "dependencies: [".to_owned()),
            ("csrf", csrf),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let html = malformed.text().await.unwrap();
    assert!(
        html.contains("role=\"alert\"") && html.contains("at line"),
        "{html}"
    );
    assert!(
        html.contains("dependencies: ["),
        "the typed text is kept: {html}"
    );
    server.stop().await;
}
