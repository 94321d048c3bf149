//! `envstore migrate` through the real binary, on an old database (every
//! migration but the newest applied, as the release before left it):
//! `--status` lists the pending one and exits 0, `--dry-run` applies
//! nothing, `migrate` applies it, and `--status` then shows none pending. A
//! database carrying a migration this binary does not know (a newer
//! envstore migrated it), or an applied migration whose text changed, makes
//! `--status`, `--dry-run` and `migrate` exit non-zero, saying which and why.
//! On SQLite, or on PostgreSQL when `ENVSTORE_TEST_DATABASE` names a server.

use std::process::Output;

use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Runs `envstore migrate ARGS --database DATABASE`.
async fn migrate(database: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_envstore"))
        .arg("migrate")
        .args(args)
        .arg("--database")
        .arg(database)
        .env_remove("ENVSTORE_DATABASE")
        .output()
        .await
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `migrate ARGS`, which must succeed; its standard output.
async fn migrate_ok(database: &str, args: &[&str]) -> String {
    let output = migrate(database, args).await;
    assert!(
        output.status.success(),
        "envstore migrate {args:?} failed\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// `migrate ARGS`, which must fail; its standard output and error.
async fn migrate_refused(database: &str, args: &[&str]) -> (String, String) {
    let output = migrate(database, args).await;
    assert!(
        !output.status.success(),
        "envstore migrate {args:?} succeeded\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    (stdout(&output), stderr(&output))
}

async fn status(database: &str) -> Value {
    serde_json::from_str(&migrate_ok(database, &["--status", "--json"]).await).unwrap()
}

fn versions(status: &Value, state: &str) -> Vec<i64> {
    status["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|migration| migration["state"] == state)
        .map(|migration| migration["version"].as_i64().unwrap())
        .collect()
}

/// The line of the `--status` table for `version`.
fn line_of(table: &str, version: i64) -> String {
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(&version.to_string()))
        .unwrap_or_else(|| panic!("no line for migration {version} in\n{table}"))
        .to_owned()
}

async fn pool(database: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(1)
        .connect(database)
        .await
        .unwrap()
}

#[tokio::test]
async fn status_dry_run_and_migrate_on_an_old_database() {
    let dir = tempfile::tempdir().unwrap();
    let backend = envstore_tests::Backend::from_env(dir.path()).await;
    let database = backend.database.as_str();
    let sqlite_file = database
        .strip_prefix("sqlite://")
        .map(std::path::PathBuf::from);

    // A database no envstore touched: every migration the binary knows is
    // pending, and reading that creates nothing.
    let fresh = status(database).await;
    let known = versions(&fresh, "pending");
    assert!(known.len() >= 2, "{fresh:#}");
    assert_eq!(fresh["pending"], json!(known));
    assert_eq!(fresh["problems"], json!([]));
    if let Some(file) = &sqlite_file {
        assert_eq!(fresh["exists"], false);
        assert!(!file.exists(), "--status created the database file");
    }
    let newest = *known.last().unwrap();
    let previous = known[known.len() - 2];

    // The schema the release before left: all but the newest migration.
    envstore_db::schema::migrate_to(database, previous)
        .await
        .unwrap();

    let table = migrate_ok(database, &["--status"]).await;
    assert!(line_of(&table, newest).contains("pending"), "{table}");
    assert!(line_of(&table, previous).contains("applied"), "{table}");
    assert!(line_of(&table, 1).contains("initial"), "{table}");
    assert!(table.contains(&format!("1 pending ({newest})")), "{table}");
    let old = status(database).await;
    assert_eq!(old["pending"], json!([newest]));
    assert_eq!(versions(&old, "applied"), known[..known.len() - 1].to_vec());
    assert!(old["migrations"][0]["applied_at"].is_string(), "{old:#}");

    // A dry run says what it would apply and applies nothing.
    let dry = migrate_ok(database, &["--dry-run"]).await;
    assert!(
        dry.contains(&format!("would apply migration {newest} (")),
        "{dry}"
    );
    let dry_json: Value =
        serde_json::from_str(&migrate_ok(database, &["--dry-run", "--json"]).await).unwrap();
    assert_eq!(dry_json["pending"], json!([newest]));
    assert_eq!(
        status(database).await,
        old,
        "--dry-run changed the database"
    );

    // Applying.
    let applied = migrate_ok(database, &[]).await;
    assert!(
        applied.contains(&format!("applied migration {newest} (")),
        "{applied}"
    );
    let now = status(database).await;
    assert_eq!(now["pending"], json!([]));
    assert_eq!(versions(&now, "applied"), known);
    for (before, after) in old["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(now["migrations"].as_array().unwrap())
        .filter(|(before, _)| before["state"] == "applied")
    {
        assert_eq!(before, after, "an applied migration's record changed");
    }
    let table = migrate_ok(database, &["--status"]).await;
    assert!(table.contains("up to date"), "{table}");
    assert!(line_of(&table, newest).contains("applied"), "{table}");
    let again = migrate_ok(database, &[]).await;
    assert!(again.contains("migrations applied: 0 now"), "{again}");
    let applied_json: Value =
        serde_json::from_str(&migrate_ok(database, &["--json"]).await).unwrap();
    assert_eq!(applied_json["applied"], json!([]));
    assert_eq!(applied_json["pending"], json!([]));

    // A newer envstore migrated the database further: this one says so and
    // refuses, in every mode, and changes nothing.
    let pool = pool(database).await;
    let future = newest + 1;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer envstore', $2, $3, $4)",
    )
    .bind(future)
    .bind(true)
    .bind(vec![7_u8; 48])
    .bind(1_000_000_i64)
    .execute(&pool)
    .await
    .unwrap();
    let (table, error) = migrate_refused(database, &["--status"]).await;
    assert!(line_of(&table, future).contains("unknown"), "{table}");
    assert!(
        error.contains(&format!(
            "migration {future} (from a newer envstore) was applied by a newer envstore"
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("knows migrations up to {newest} only")),
        "{error}"
    );
    let (json_out, _) = migrate_refused(database, &["--status", "--json"]).await;
    let newer: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(versions(&newer, "unknown"), [future]);
    assert_eq!(newer["problems"].as_array().unwrap().len(), 1);
    let (_, error) = migrate_refused(database, &["--dry-run"]).await;
    assert!(error.contains("newer envstore"), "{error}");
    let (_, error) = migrate_refused(database, &[]).await;
    assert!(error.contains("newer envstore"), "{error}");
    let (json_out, _) = migrate_refused(database, &["--status", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&json_out).unwrap(),
        newer,
        "a refused migrate changed the database"
    );

    // A released migration edited after it was applied: named, refused.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(future)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
        .bind(vec![0_u8; 48])
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (table, error) = migrate_refused(database, &["--status"]).await;
    assert!(line_of(&table, 1).contains("modified"), "{table}");
    assert!(
        error.contains("migration 1 (initial) was applied with another text"),
        "{error}"
    );
    let (_, error) = migrate_refused(database, &[]).await;
    assert!(error.contains("a released migration was edited"), "{error}");
}
