//! The binary as a user runs it: migrate, status (table and JSON), refusal of bad configuration
//! and of an unmigrated database.

use std::process::Command;

use wa_outbox::child::DieWithParent as _;
use wa_outbox::testing::test_db;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wa-outbox"));
    c.env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .die_with_parent();
    c
}

#[tokio::test]
async fn migrate_then_status_shows_the_rows() {
    let db = test_db().await;
    let out = bin()
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sqlx::query("insert into wa_session (id) values ('cli_s1')")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("insert into wa_message (session_id, recipient, body) values ('cli_s1', '15551234567', 'x')")
        .execute(&db.pool)
        .await
        .unwrap();

    let out = bin()
        .args(["status", "--json"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sessions"][0]["id"], "cli_s1");
    assert_eq!(v["sessions"][0]["queued"], 1);
    assert_eq!(v["queue"][0]["status"], "queued");

    let out = bin()
        .arg("status")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("SESSIONS (1)") && text.contains("cli_s1"),
        "{text}"
    );
}

#[test]
fn a_bad_variable_stops_start_up_naming_it() {
    let out = bin()
        .arg("status")
        .env("WA_LEASE_TTL", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WA_LEASE_TTL"), "{err}");
}

#[tokio::test]
async fn run_refuses_an_unmigrated_database() {
    let db = test_db().await;
    sqlx::query("drop table _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let out = bin()
        .arg("run")
        .env("DATABASE_URL", &db.url)
        .env(
            "WA_AUTH_KEY",
            "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not migrated"), "{err}");
}

#[test]
fn help_lists_every_variable() {
    let out = bin().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for (name, _, _) in wa_outbox::config::VARS {
        assert!(text.contains(name), "{name} missing from --help");
    }
}
