//! A database written by the previous release migrates forward with its data
//! intact. No database from an older binary is kept here, so the test makes
//! one: it applies the migrations up to the previous release's last one,
//! writes what that release wrote (namespaces with policy, environments,
//! builds in every state with their phases, locks and jobs, tokens and
//! their lineage, role bindings, the audit log, usage, idempotency keys)
//! through plain SQL in that schema, then opens it with the current
//! [`Database`], which applies the rest, and reads everything back through
//! the current API, and keeps using it: the old queue is claimed, an old
//! running build is joined, new builds are numbered after the old ones.
//! On SQLite, and on PostgreSQL too when `ENVSTORE_TEST_DATABASE` names a
//! server (`envstore_db::testing`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use envstore_core::{
    BuildPhase, BuildStatus, CanonicalSpec, ContentHash, EnvironmentName, Grant, NamespaceName,
    Role,
};
use envstore_db::schema::{self, MigrationState};
use envstore_db::testing::TestDatabase;
use envstore_db::{BuildOutcome, Database, Dialect, now_millis};
use sqlx::AnyPool;

/// The last migration of the previous release: a database that release
/// made has exactly versions 1 to this one applied. Migrations added since
/// (0015 `submitted_spec`, and any later ones) are what an upgrade applies.
///
/// At each release, move it to the newest version in `crates/db/migrations`
/// that the release ships (`git log -- crates/db/migrations` shows which
/// files came after the last release tag), and extend `write_old_data`
/// with rows for the tables and columns that release added, written as that
/// release writes them, so the next upgrade is tested over them too.
const PREVIOUS_RELEASE: i64 = 14;

const CHANNEL: &str = "https://conda.example.org/demo/";

/// Build ids as the old release made them (UUIDv7), oldest first.
const B1: &str = "01930000-0000-7000-8000-000000000001";
const B2: &str = "01930000-0000-7000-8000-000000000002";
const B3: &str = "01930000-0000-7000-8000-000000000003";
const B4: &str = "01930000-0000-7000-8000-000000000004";
const B5: &str = "01930000-0000-7000-8000-000000000005";
const B6: &str = "01930000-0000-7000-8000-000000000006";
const B7: &str = "01930000-0000-7000-8000-000000000007";

/// Token values, shown once by the old release; only their sha256 is stored.
const ADMIN_TOKEN: &str = "envstore_0123456789abcdef0123456789abcdef0123456789abcdef01234567";
const ALICE_TOKEN: &str = "envstore_1111111111111111111111111111111111111111111111111111111111";
const CHILD_TOKEN: &str = "envstore_2222222222222222222222222222222222222222222222222222222222";
const REVOKED_TOKEN: &str = "envstore_3333333333333333333333333333333333333333333333333333333333";
const EXPIRED_TOKEN: &str = "envstore_4444444444444444444444444444444444444444444444444444444444";

const PREFIX_BYTES: i64 = 512_000_000;

/// What the old release wrote, with the values the checks compare against.
struct OldData {
    t0: i64,
    spec_analysis: String,
    spec_ml: String,
    spec_from_lock: String,
    lock_one: ContentHash,
    lock_two: ContentHash,
    packed_one: ContentHash,
}

impl OldData {
    fn new() -> Self {
        let lock_one = ContentHash::of(b"the lock of data-science/analysis");
        let lock_two = ContentHash::of(b"the lock of data-science/ml-cpu");
        // Canonical specs as the old release serialised them: field order,
        // no spaces, empty maps left out. Their hash is the sha256 of this text.
        let spec_analysis = format!(
            r#"{{"channels":["{CHANNEL}"],"dependencies":["ipykernel","numpy >=1.26","python 3.11.*"],"platforms":["linux-64"]}}"#
        );
        let spec_ml = format!(
            r#"{{"channels":["{CHANNEL}"],"dependencies":["python 3.11.*","scikit-learn"],"platforms":["linux-64","osx-arm64"],"variables":{{"OMP_NUM_THREADS":"4"}}}}"#
        );
        let spec_from_lock = format!(
            r#"{{"channels":["{CHANNEL}"],"dependencies":[],"platforms":["linux-64"],"from_lock":"{}"}}"#,
            lock_one.to_hex()
        );
        Self {
            t0: now_millis() - 10 * 24 * 3600 * 1000,
            spec_analysis,
            spec_ml,
            spec_from_lock,
            lock_one,
            lock_two,
            packed_one: ContentHash::of(b"packed prefix of lock one"),
        }
    }

    fn hash(spec: &str) -> String {
        ContentHash::of(spec.as_bytes()).to_hex()
    }

    fn packages_one(&self) -> String {
        let package = |name: &str, version: &str, build: &str, subdir: &str, size: u64| {
            serde_json::json!({
                "name": name,
                "version": version,
                "build": build,
                "subdir": subdir,
                "url": format!("{CHANNEL}{subdir}/{name}-{version}-{build}.conda"),
                "sha256": ContentHash::of(name.as_bytes()).to_hex(),
                "size": size,
            })
        };
        serde_json::json!({
            "linux-64": [
                package("ipykernel", "6.29.5", "pyh3099207_0", "noarch", 119_000),
                package("numpy", "1.26.4", "py311h64a7726_0", "linux-64", 8_000_000),
                package("python", "3.11.9", "hb806964_0", "linux-64", 30_000_000),
            ]
        })
        .to_string()
    }

    fn packages_two(&self) -> String {
        let package = |platform: &str, name: &str| {
            serde_json::json!({
                "name": name,
                "version": "1.0",
                "build": "0",
                "subdir": platform,
                "url": format!("{CHANNEL}{platform}/{name}-1.0-0.conda"),
            })
        };
        serde_json::json!({
            "linux-64": [package("linux-64", "python"), package("linux-64", "scikit-learn")],
            "osx-arm64": [package("osx-arm64", "python"), package("osx-arm64", "scikit-learn")],
        })
        .to_string()
    }

    fn phases(&self, start: i64, done: usize) -> String {
        let names = ["solving", "downloading", "linking", "publishing"];
        let phases: Vec<serde_json::Value> = names
            .iter()
            .enumerate()
            .take(done + 1)
            .map(|(index, name)| {
                let started_at = start + 1000 * index as i64;
                if index < done {
                    serde_json::json!({
                        "phase": name,
                        "started_at": started_at,
                        "finished_at": started_at + 900,
                        "detail": format!("{} packages", 3 + index),
                    })
                } else {
                    serde_json::json!({"phase": name, "started_at": started_at})
                }
            })
            .collect();
        serde_json::Value::Array(phases).to_string()
    }
}

async fn run(pool: &AnyPool, statement: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()))
        .execute(pool)
        .await
        .unwrap_or_else(|error| panic!("{error}\n{statement}"));
}

/// Text as an SQL literal.
fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Writes what the previous release wrote, as its code wrote it, into the
/// previous release's schema.
async fn write_old_data(pool: &AnyPool, postgres: bool, data: &OldData) {
    let t0 = data.t0;
    let policy = r#"{"allowed_platforms":["linux-64"],"required_packages":["ipykernel"],"max_environments":20}"#;
    run(pool, format!(
        "INSERT INTO namespaces (name, created_at, public_read, policy, deleted_at) VALUES \
         ('data-science', {t0}, 1, {}, NULL), ('team-ml', {}, 0, NULL, NULL), ('old-team', {}, 0, NULL, {})",
        text(policy), t0 + 1, t0 + 2, t0 + 900
    ))
    .await;
    for spec in [&data.spec_analysis, &data.spec_ml, &data.spec_from_lock] {
        run(
            pool,
            format!(
                "INSERT INTO specs (spec_hash, canonical, created_at) VALUES ({}, {}, {t0})",
                text(&OldData::hash(spec)),
                text(spec)
            ),
        )
        .await;
    }
    run(
        pool,
        format!(
            "INSERT INTO locks (lock_hash, platforms, packages, created_at, packed_prefix_sha256, variables) VALUES \
             ({}, '[\"linux-64\"]', {}, {}, {}, NULL), \
             ({}, '[\"linux-64\",\"osx-arm64\"]', {}, {}, NULL, '{{\"OMP_NUM_THREADS\":\"4\"}}')",
            text(&data.lock_one.to_hex()),
            text(&data.packages_one()),
            t0 + 20,
            text(&data.packed_one.to_hex()),
            text(&data.lock_two.to_hex()),
            text(&data.packages_two()),
            t0 + 40,
        ),
    )
    .await;
    run(
        pool,
        format!(
            "INSERT INTO environments (namespace, name, current_build_id, created_at, deleted_at) VALUES \
             ('data-science', 'analysis', '{B2}', {}, NULL), ('data-science', 'ml-cpu', '{B3}', {}, NULL), \
             ('team-ml', 'train', NULL, {}, NULL), ('old-team', 'legacy', NULL, {}, {})",
            t0 + 10,
            t0 + 30,
            t0 + 40,
            t0 + 5,
            t0 + 900
        ),
    )
    .await;

    let analysis = text(&OldData::hash(&data.spec_analysis));
    let ml = text(&OldData::hash(&data.spec_ml));
    let from_lock = text(&OldData::hash(&data.spec_from_lock));
    let (one, two) = (text(&data.lock_one.to_hex()), text(&data.lock_two.to_hex()));
    // (id, namespace, environment, spec, status, lock, lock_reused,
    // prefix_reused, phases, error, created, started, finished,
    // cancel_requested, deleted, collected, submitted_by)
    let builds = [
        format!(
            "'{B1}', 'data-science', 'analysis', {analysis}, 'succeeded', {one}, 0, 0, {}, NULL, {}, {}, {}, 0, NULL, {}, 'alice'",
            text(&data.phases(t0 + 11, 4)),
            t0 + 10,
            t0 + 11,
            t0 + 4011,
            t0 + 600
        ),
        format!(
            "'{B2}', 'data-science', 'analysis', {analysis}, 'succeeded', {one}, 1, 1, {}, NULL, {}, {}, {}, 0, NULL, NULL, 'alice'",
            text(&data.phases(t0 + 21, 4)),
            t0 + 20,
            t0 + 21,
            t0 + 1021
        ),
        format!(
            "'{B3}', 'data-science', 'ml-cpu', {ml}, 'succeeded', {two}, 0, 0, {}, NULL, {}, {}, {}, 0, NULL, NULL, 'bob'",
            text(&data.phases(t0 + 31, 4)),
            t0 + 30,
            t0 + 31,
            t0 + 5031
        ),
        format!(
            "'{B4}', 'team-ml', 'train', {ml}, 'failed', NULL, 0, 0, {}, {}, {}, {}, {}, 0, NULL, NULL, 'bob'",
            text(&data.phases(t0 + 41, 0)),
            text("the solve failed: nothing provides __cuda >=12 needed by pytorch-gpu"),
            t0 + 40,
            t0 + 41,
            t0 + 941
        ),
        format!(
            "'{B5}', 'team-ml', 'train', {analysis}, 'running', NULL, 0, 0, {}, NULL, {}, {}, NULL, 0, NULL, NULL, 'bob'",
            text(&data.phases(t0 + 51, 1)),
            t0 + 50,
            t0 + 51
        ),
        format!(
            "'{B6}', 'team-ml', 'train', {from_lock}, 'queued', NULL, 0, 0, '[]', NULL, {}, NULL, NULL, 0, NULL, NULL, 'alice'",
            t0 + 60
        ),
        format!(
            "'{B7}', 'old-team', 'legacy', {analysis}, 'cancelled', NULL, 0, 0, '[]', {}, {}, NULL, {}, 0, {}, NULL, 'carol'",
            text("cancelled by carol"),
            t0 + 70,
            t0 + 71,
            t0 + 900
        ),
    ];
    for (index, values) in builds.iter().enumerate() {
        // The old release numbered builds as the current one does: a
        // counter row bumped in the submitting transaction (SQLite), the
        // column's sequence default (PostgreSQL).
        let (seq_column, seq_value) = if postgres {
            (String::new(), String::new())
        } else {
            run(
                pool,
                "UPDATE build_seq SET last = last + 1 WHERE id = 1".to_owned(),
            )
            .await;
            (", seq".to_owned(), format!(", {}", index + 1))
        };
        run(
            pool,
            format!(
                "INSERT INTO builds (id, namespace, environment, spec_hash, status, lock_hash, lock_reused, \
                 prefix_reused, phases, error, created_at, started_at, finished_at, cancel_requested, deleted_at, \
                 prefix_collected_at, submitted_by{seq_column}) VALUES ({values}{seq_value})"
            ),
        )
        .await;
    }
    // One job per build: done for those that ended, a lease that ran out for
    // the running one (its worker died), queued for the queued one.
    let jobs = [
        (B1, "done", 1, 0, "NULL", "'worker-a'", t0 + 10),
        (B2, "done", 1, 0, "NULL", "'worker-b'", t0 + 20),
        (B3, "done", 1, 0, "NULL", "'worker-a'", t0 + 30),
        (B4, "done", 1, 0, "NULL", "'worker-b'", t0 + 40),
        (B5, "running", 1, 0, "LEASE", "'worker-gone'", t0 + 50),
        (B6, "queued", 0, 0, "NULL", "NULL", t0 + 60),
        (B7, "done", 0, 0, "NULL", "NULL", t0 + 70),
    ];
    for (index, (build, state, attempts, stopped, locked_until, worker, at)) in
        jobs.into_iter().enumerate()
    {
        let locked_until = if locked_until == "LEASE" {
            (t0 + 30_050).to_string()
        } else {
            locked_until.to_owned()
        };
        run(
            pool,
            format!(
                "INSERT INTO jobs (id, build_id, state, attempts, run_after, locked_until, worker, last_error, \
                 created_at, stopped) VALUES ('job-{index}', '{build}', '{state}', {attempts}, {at}, \
                 {locked_until}, {worker}, NULL, {at}, {stopped})"
            ),
        )
        .await;
    }
    run(
        pool,
        format!(
            "INSERT INTO attempt_logs (build_id, attempt, text, updated_at) VALUES ('{B5}', 1, {}, {})",
            text("solving for linux-64\nlocked 3 packages\ndownloading 3 packages\n"),
            t0 + 2000
        ),
    )
    .await;
    run(
        pool,
        format!(
            "INSERT INTO prefix_leases (lock_hash, worker, locked_until) VALUES ({one}, 'worker-gone', {})",
            t0 + 30_050
        ),
    )
    .await;

    let digest = |value: &str| text(&ContentHash::of(value.as_bytes()).to_hex());
    let far = t0 + 400 * 24 * 3600 * 1000;
    let tokens = [
        format!(
            "'tok-admin', {}, 'admin', 'bootstrap', 'server', 1, NULL, {t0}, NULL, NULL, NULL",
            digest(ADMIN_TOKEN)
        ),
        format!(
            "'tok-alice', {}, 'alice', 'laptop', 'admin', 0, '[{{\"namespace\":\"data-science\",\"role\":\"developer\"}}]', {}, {far}, NULL, NULL",
            digest(ALICE_TOKEN),
            t0 + 1
        ),
        format!(
            "'tok-child', {}, 'alice', 'ci', 'alice', 0, '[{{\"namespace\":\"data-science\",\"role\":\"viewer\"}}]', {}, NULL, NULL, 'tok-alice'",
            digest(CHILD_TOKEN),
            t0 + 2
        ),
        format!(
            "'tok-revoked', {}, 'bob', 'old laptop', 'admin', 0, NULL, {}, NULL, {}, NULL",
            digest(REVOKED_TOKEN),
            t0 + 3,
            t0 + 500
        ),
        format!(
            "'tok-expired', {}, 'carol', 'workshop', 'admin', 0, NULL, {}, {}, NULL, NULL",
            digest(EXPIRED_TOKEN),
            t0 + 4,
            t0 + 5
        ),
    ];
    for values in tokens {
        run(
            pool,
            format!(
                "INSERT INTO tokens (id, token_sha256, subject, name, created_by, server_admin, scopes, created_at, \
                 expires_at, revoked_at, parent_token_id) VALUES ({values})"
            ),
        )
        .await;
    }
    run(
        pool,
        format!(
            "INSERT INTO role_bindings (subject, namespace_pattern, role, created_at) VALUES \
             ('alice', 'data-science', 'admin', {t0}), ('bob', 'team-*', 'developer', {t0}), \
             ('carol', 'data-science', 'viewer', {t0})"
        ),
    )
    .await;
    let audit = [
        ("admin", "namespace.create", "data-science", "{}".to_owned()),
        (
            "admin",
            "role.bind",
            "data-science",
            r#"{"subject":"alice","role":"admin"}"#.to_owned(),
        ),
        (
            "alice",
            "environment.submit",
            "data-science/analysis",
            format!(r#"{{"build_id":"{B1}"}}"#),
        ),
        (
            "alice",
            "token.create",
            "tok-child",
            r#"{"name":"ci"}"#.to_owned(),
        ),
    ];
    for (index, (subject, action, target, detail)) in audit.iter().enumerate() {
        run(
            pool,
            format!(
                "INSERT INTO audit_log (id, at, subject, action, target, detail) VALUES \
                 ('01930000-0000-7000-8000-0000000000a{index}', {}, '{subject}', '{action}', '{target}', {})",
                t0 + 100 + index as i64,
                text(detail)
            ),
        )
        .await;
    }
    run(
        pool,
        format!(
            "INSERT INTO prefix_sizes (lock_hash, bytes, files, measured_at) VALUES ({one}, {PREFIX_BYTES}, 12000, {})",
            t0 + 30
        ),
    )
    .await;
    run(
        pool,
        "INSERT INTO namespace_downloads (namespace, downloads) VALUES ('data-science', 42)"
            .to_owned(),
    )
    .await;
    run(
        pool,
        format!("INSERT INTO lock_downloads (lock_hash, downloads) VALUES ({one}, 7)"),
    )
    .await;
    run(
        pool,
        format!(
            "INSERT INTO namespace_quotas (namespace, max_disk_bytes, max_concurrent_builds, updated_at) \
             VALUES ('team-ml', 10000000000, 2, {t0})"
        ),
    )
    .await;
    run(
        pool,
        format!(
            "INSERT INTO idempotency_keys (caller, idempotency_key, request_hash, status, body, created_at) \
             VALUES ('alice', 'retry-1', 'digest-1', 202, {}, {})",
            text(&format!(r#"{{"build_id":"{B6}"}}"#)),
            now_millis() - 3_600_000
        ),
    )
    .await;
    run(
        pool,
        format!("INSERT INTO readiness_probe (id, checked_at) VALUES (1, {t0})"),
    )
    .await;
}

fn ns(name: &str) -> NamespaceName {
    name.parse().unwrap()
}

fn env(name: &str) -> EnvironmentName {
    name.parse().unwrap()
}

#[tokio::test]
async fn a_database_of_the_previous_release_migrates_forward_with_its_data() {
    for test in TestDatabase::each_dialect().await {
        let postgres = test.dialect == Dialect::Postgres;
        eprintln!("{}", if postgres { "PostgreSQL" } else { "SQLite" });
        let data = OldData::new();

        schema::migrate_to(&test.url, PREVIOUS_RELEASE)
            .await
            .unwrap();
        let old = schema::status(&test.url).await.unwrap();
        let applied: Vec<i64> = old
            .in_state(MigrationState::Applied)
            .map(|migration| migration.version)
            .collect();
        assert_eq!(applied, (1..=PREVIOUS_RELEASE).collect::<Vec<_>>());
        assert!(
            !old.pending.is_empty(),
            "this release adds migrations after {PREVIOUS_RELEASE}: move PREVIOUS_RELEASE only at a release"
        );
        assert!(old.problems.is_empty(), "{:?}", old.problems);

        let pool: AnyPool = test.blank_pool().await;
        write_old_data(&pool, postgres, &data).await;
        pool.close().await;

        let db = Database::connect(&test.url).await.unwrap();
        let now = schema::status(&test.url).await.unwrap();
        assert!(now.is_current(), "{}", now.table());
        assert!(
            old.pending.iter().all(|version| now
                .in_state(MigrationState::Applied)
                .any(|migration| migration.version == *version)),
            "{}",
            now.table()
        );

        check_namespaces_and_access(&db).await;
        check_environments_and_builds(&db, &data).await;
        check_usage_and_queue(&db, &data).await;
        keep_using(&db, &data).await;

        db.close().await;
        test.finish().await;
    }
}

async fn check_namespaces_and_access(db: &Database) {
    let namespaces = db.list_namespaces().await.unwrap();
    let names: Vec<(&str, bool)> = namespaces
        .iter()
        .map(|(name, _, public)| (name.as_str(), *public))
        .collect();
    assert_eq!(
        names,
        [("data-science", true), ("team-ml", false)],
        "the deleted namespace stays hidden"
    );
    let policy = db.namespace_policy(&ns("data-science")).await.unwrap();
    assert_eq!(policy.allowed_platforms, Some(vec!["linux-64".to_owned()]));
    assert_eq!(policy.required_packages, ["ipykernel"]);
    assert_eq!(policy.max_environments, Some(20));
    assert_eq!(
        db.namespace_policy(&ns("team-ml")).await.unwrap(),
        Default::default()
    );

    let admin = db.active_token(ADMIN_TOKEN).await.unwrap().unwrap();
    assert!(admin.server_admin);
    assert_eq!(admin.subject, "admin");
    let alice = db.active_token(ALICE_TOKEN).await.unwrap().unwrap();
    assert_eq!(alice.id, "tok-alice");
    assert_eq!(
        alice.scopes,
        Some(vec![Grant {
            namespace: "data-science".parse().unwrap(),
            role: Role::Developer
        }])
    );
    let child = db.active_token(CHILD_TOKEN).await.unwrap().unwrap();
    assert_eq!(child.parent_token_id.as_deref(), Some("tok-alice"));
    assert_eq!(
        db.active_token(REVOKED_TOKEN).await.unwrap().map(|t| t.id),
        None
    );
    assert_eq!(
        db.active_token(EXPIRED_TOKEN).await.unwrap().map(|t| t.id),
        None
    );
    let lineage: Vec<String> = db
        .token_lineage("tok-alice")
        .await
        .unwrap()
        .into_iter()
        .map(|token| token.id)
        .collect();
    assert_eq!(lineage, ["tok-alice", "tok-child"]);
    assert_eq!(
        db.bindings_of("bob").await.unwrap(),
        [Grant {
            namespace: "team-*".parse().unwrap(),
            role: Role::Developer
        }]
    );
    assert_eq!(db.bindings_of("alice").await.unwrap()[0].role, Role::Admin);

    let audit = db.audit_entries(10, None).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "token.create",
            "environment.submit",
            "role.bind",
            "namespace.create"
        ],
        "newest first"
    );
    assert_eq!(audit[1].detail["build_id"], B1);
    let older = db
        .audit_entries(10, Some(audit[1].id.as_str()))
        .await
        .unwrap();
    assert_eq!(older.len(), 2, "paging back through the old entries");

    // Revoking an old token revokes what it minted.
    db.revoke_token("tok-alice").await.unwrap();
    assert!(db.active_token(CHILD_TOKEN).await.unwrap().is_none());
}

async fn check_environments_and_builds(db: &Database, data: &OldData) {
    let science = ns("data-science");
    let analysis = db
        .environment(&science, &env("analysis"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(analysis.current_build_id.as_deref(), Some(B2));
    let current = db
        .current_lock(&science, &env("analysis"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.lock_hash, Some(data.lock_one.to_hex()));

    let history = db
        .environment_builds(&science, &env("analysis"))
        .await
        .unwrap();
    let ids: Vec<&str> = history.iter().map(|build| build.id.as_str()).collect();
    assert_eq!(ids, [B2, B1], "newest first, in the old numbering");
    let (b2, b1) = (&history[0], &history[1]);
    assert_eq!(b2.status, BuildStatus::Succeeded);
    assert!(b2.lock_reused && b2.prefix_reused);
    assert!(b2.prefix_collected_at.is_none());
    assert_eq!(b1.prefix_collected_at, Some(data.t0 + 600));
    assert_eq!(b1.phases.len(), 4);
    assert_eq!(b1.phases[0].phase, BuildPhase::Solving);
    assert_eq!(b1.phases[3].phase, BuildPhase::Publishing);
    assert_eq!(b1.phases[0].detail.as_deref(), Some("3 packages"));
    assert_eq!(b1.started_at, Some(data.t0 + 11));
    assert_eq!(
        db.submitted_spec(B2).await.unwrap(),
        Some(None),
        "builds from before kept no spec text"
    );
    let page = db
        .builds_page(&science, &env("analysis"), None, Some("alice"), 10)
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[1].submitted_by.as_deref(), Some("alice"));

    let train = db
        .environment_builds(&ns("team-ml"), &env("train"))
        .await
        .unwrap();
    let states: Vec<(&str, BuildStatus)> = train
        .iter()
        .map(|build| (build.id.as_str(), build.status))
        .collect();
    assert_eq!(
        states,
        [
            (B6, BuildStatus::Queued),
            (B5, BuildStatus::Running),
            (B4, BuildStatus::Failed)
        ]
    );
    assert!(train[2].error.as_deref().unwrap().contains("__cuda"));
    assert_eq!(train[1].phases.len(), 2);
    assert_eq!(train[1].phases[1].finished_at, None, "still downloading");
    assert_eq!(
        db.environment(&ns("team-ml"), &env("train"))
            .await
            .unwrap()
            .unwrap()
            .current_build_id,
        None
    );
    assert!(
        db.environment(&ns("old-team"), &env("legacy"))
            .await
            .unwrap()
            .is_none(),
        "deleted environments stay hidden"
    );
    assert_eq!(
        db.deleted_builds().await.unwrap(),
        [(B7.to_owned(), 0)],
        "and garbage collection still finds what they left (cancelled while queued: no attempt)"
    );

    // Old specs read back and keep their hash, so the same spec submitted
    // again joins or reuses what the old release built.
    for text in [&data.spec_analysis, &data.spec_ml, &data.spec_from_lock] {
        let hash = OldData::hash(text);
        let spec: CanonicalSpec = db.spec(&hash).await.unwrap().unwrap();
        assert_eq!(spec.hash().to_hex(), hash, "{text}");
    }
    let from_lock = db
        .spec(&OldData::hash(&data.spec_from_lock))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_lock.from_lock, Some(data.lock_one));
    let ml = db
        .spec(&OldData::hash(&data.spec_ml))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ml.variables["OMP_NUM_THREADS"], "4");

    let lock = db.lock(&data.lock_one.to_hex()).await.unwrap().unwrap();
    assert_eq!(lock.platforms, ["linux-64"]);
    let names: Vec<&str> = lock.packages["linux-64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| package["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ipykernel", "numpy", "python"]);
    assert!(lock.variables.is_empty());
    let two = db.lock(&data.lock_two.to_hex()).await.unwrap().unwrap();
    assert_eq!(
        two.variables,
        BTreeMap::from([("OMP_NUM_THREADS".to_owned(), "4".to_owned())])
    );
    assert_eq!(
        db.lock_platforms(&data.lock_two.to_hex()).await.unwrap(),
        Some(vec!["linux-64".to_owned(), "osx-arm64".to_owned()])
    );
    assert_eq!(
        db.packed_prefix(&data.lock_one).await.unwrap(),
        Some(data.packed_one)
    );
    assert_eq!(db.packed_prefix(&data.lock_two).await.unwrap(), None);

    let listed: Vec<(String, String, bool, String)> = db
        .succeeded_environments(("", ""), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|environment| {
            (
                environment.namespace,
                environment.name,
                environment.public_read,
                environment.build_id,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "data-science".to_owned(),
                "analysis".to_owned(),
                true,
                B2.to_owned()
            ),
            (
                "data-science".to_owned(),
                "ml-cpu".to_owned(),
                true,
                B3.to_owned()
            ),
        ]
    );
    let mut holders = db
        .namespaces_with_lock(&data.lock_one.to_hex())
        .await
        .unwrap();
    holders.sort();
    assert_eq!(holders, ["data-science"]);
}

async fn check_usage_and_queue(db: &Database, data: &OldData) {
    let report = db.usage_report(|_, _| true).await.unwrap();
    let science = &report.namespaces[0];
    assert_eq!(science.namespace, "data-science");
    assert_eq!(science.figures.disk_bytes, PREFIX_BYTES);
    assert_eq!(science.figures.prefixes, 1, "B1's prefix was collected");
    assert_eq!(science.figures.builds.succeeded, 3);
    assert_eq!(science.figures.build_millis, 4000 + 1000 + 5000);
    assert_eq!(science.figures.lockfile_downloads, 42);
    assert_eq!(science.figures.artifact_downloads, 7);
    let team = &report.namespaces[1];
    assert_eq!(team.namespace, "team-ml");
    assert_eq!(
        (
            team.figures.builds.queued,
            team.figures.builds.running,
            team.figures.builds.failed
        ),
        (1, 1, 1)
    );
    assert_eq!(team.quota.max_disk_bytes, Some(10_000_000_000));
    assert_eq!(team.quota.max_concurrent_builds, Some(2));
    assert_eq!(
        db.prefix_size(&data.lock_one).await.unwrap(),
        Some(PREFIX_BYTES)
    );
    assert_eq!(db.active_builds(&ns("team-ml")).await.unwrap(), 2);

    let answer = db
        .idempotent_answer("alice", "retry-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 202);
    assert_eq!(answer.body, format!(r#"{{"build_id":"{B6}"}}"#));

    let log = db.attempt_log(B5).await.unwrap().unwrap();
    assert_eq!(log.attempt, 1);
    assert!(log.text.contains("downloading 3 packages"));
    assert_eq!(db.queued_jobs().await.unwrap(), 1);
    db.check_writable().await.unwrap();
}

/// The upgraded database keeps working: the old running build is joined,
/// the old queue is claimed, and new builds come after the old ones.
async fn keep_using(db: &Database, data: &OldData) {
    let team = ns("team-ml");
    let train = env("train");
    let analysis_spec: CanonicalSpec = serde_json::from_str(&data.spec_analysis).unwrap();
    let joined = db
        .submit_build(&team, &train, &analysis_spec, Some("bob"))
        .await
        .unwrap();
    assert!(joined.joined, "the same spec joins the old running build");
    assert_eq!(joined.build.id, B5);

    // The running build's worker died before the upgrade: its expired
    // lease is taken over first (it was queued first), then the queued one.
    let lease = Duration::from_secs(30);
    let first = db.claim_job("new-worker", lease, 3).await.unwrap().unwrap();
    assert_eq!((first.build_id.as_str(), first.attempts), (B5, 2));
    assert!(first.failed_at_limit.is_none());
    let second = db.claim_job("new-worker", lease, 3).await.unwrap().unwrap();
    assert_eq!((second.build_id.as_str(), second.attempts), (B6, 1));
    assert!(
        db.claim_job("new-worker", lease, 3)
            .await
            .unwrap()
            .is_none()
    );
    assert!(db.job_held_by(&second.job_id, "new-worker").await.unwrap());
    assert!(
        db.acquire_prefix_lease(&data.lock_one, "new-worker", lease)
            .await
            .unwrap(),
        "the dead worker's prefix lease ran out"
    );
    assert!(db.start_build(B6).await.unwrap());
    let succeeded = |lock: ContentHash| BuildOutcome {
        status: BuildStatus::Succeeded,
        lock_hash: Some(lock),
        lock_reused: true,
        prefix_reused: false,
        phases: Vec::new(),
        error: None,
    };
    db.finish_build(B6, &succeeded(data.lock_one))
        .await
        .unwrap();
    assert_eq!(
        db.environment(&team, &train)
            .await
            .unwrap()
            .unwrap()
            .current_build_id
            .as_deref(),
        Some(B6)
    );

    // A new build of an old environment is numbered after every old build
    // and becomes current over the old current build.
    let science = ns("data-science");
    let ml_spec: CanonicalSpec = serde_json::from_str(&data.spec_ml).unwrap();
    let new = db
        .submit_build(&science, &env("analysis"), &ml_spec, Some("alice"))
        .await
        .unwrap();
    assert!(!new.joined);
    let old_seqs: Vec<i64> = db
        .environment_builds(&team, &train)
        .await
        .unwrap()
        .iter()
        .map(|build| build.seq)
        .collect();
    assert!(
        old_seqs.iter().all(|seq| new.build.seq > *seq) && new.build.seq > 7,
        "new build {} after old builds {old_seqs:?}",
        new.build.seq
    );
    db.finish_build(&new.build.id, &succeeded(data.lock_two))
        .await
        .unwrap();
    let history = db
        .environment_builds(&science, &env("analysis"))
        .await
        .unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].id, new.build.id);
    assert_eq!(
        db.environment(&science, &env("analysis"))
            .await
            .unwrap()
            .unwrap()
            .current_build_id,
        Some(new.build.id.clone())
    );
    // And it may be rolled back to the old build.
    assert!(
        db.set_current_build(&science, &env("analysis"), B2)
            .await
            .unwrap()
    );
}
