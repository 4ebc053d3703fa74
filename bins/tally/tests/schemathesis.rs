//! The OpenAPI document fuzzed against a running `tally serve` with schemathesis (from
//! PyPI), once per role, on SQLite and on Postgres: thousands of generated requests,
//! valid and not; not one answered with a server error, and not one that the
//! document calls valid refused with 400 or 422 (schemathesis' positive data
//! acceptance, less the refusals that depend on the log's state, which
//! `tests/fuzz/tally_checks.py` lists and the document's descriptions state).
//! `.ci/run` installs schemathesis into a venv and points `TALLY_SCHEMATHESIS` at
//! it; elsewhere the test looks for `schemathesis` on the PATH and, without it, says
//! so and checks nothing (CI fails instead).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::process::Command;

use tally_store::testing::TestDatabase;

mod common;
use common::Served;

const KEYS: [(&str, &str); 3] = [
    ("service", "svc-key-schemathesis-0123456789"),
    ("admin", "adm-key-schemathesis-0123456789"),
    ("auditor", "aud-key-schemathesis-0123456789"),
];

fn schemathesis() -> Option<String> {
    if let Ok(path) = std::env::var("TALLY_SCHEMATHESIS") {
        return Some(path);
    }
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "schemathesis".to_string())
}

#[test]
fn sqlite_no_generated_request_is_refused_or_fails_for_any_role() {
    fuzz(&TestDatabase::sqlite().url);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_no_generated_request_is_refused_or_fails_for_any_role() {
    let database = TestDatabase::postgres().await;
    let url = database.url.clone();
    tokio::task::spawn_blocking(move || fuzz(&url))
        .await
        .unwrap();
    database.drop_database().await;
}

fn fuzz(url: &str) {
    let Some(schemathesis) = schemathesis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is missing in CI (.ci/run installs it into a venv)"
        );
        eprintln!("schemathesis not found (pip install schemathesis): the API was not fuzzed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let checks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz");
    let keys: Vec<String> = KEYS
        .iter()
        .map(|(role, key)| format!("{role}:{role}-fuzz:{key}"))
        .collect();
    let keys = keys.join(",");
    let server = Served::start(
        url,
        &[],
        &[
            ("TALLY_API_KEYS", &keys),
            (
                "TALLY_WEBHOOK_SECRETS",
                "stars:fuzz-webhook-secret-0123456789",
            ),
            ("RUST_LOG", "error"),
        ],
    );
    let base = server.base.clone();
    let mut failures = Vec::new();
    for (role, key) in KEYS {
        // A crash of schemathesis itself (a "Runtime Error" in its own code, with no
        // check failing: hypothesis has been seen to trip over its lambda-source cache
        // with two workers) is not a finding about Tally: that role runs once more.
        // A check that fails, or a second crash, fails the test.
        for run in 1..=2 {
            let (passed, said) = fuzz_as(&schemathesis, dir.path(), checks, &base, key);
            let generated = said
                .lines()
                .find(|l| l.contains(" generated, "))
                .unwrap_or("")
                .trim()
                .to_string();
            eprintln!("schemathesis on {url} as {role} (run {run}): {generated}");
            if passed && generated.contains("generated") {
                break;
            }
            let tool_crash = said.contains("Runtime Error") && !said.contains("Failures:");
            if !(tool_crash && run == 1) {
                failures.push(format!("as {role}:\n{said}"));
                break;
            }
        }
    }
    drop(server);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One schemathesis run as the holder of `key`: whether it passed, and what it said.
fn fuzz_as(
    schemathesis: &str,
    dir: &std::path::Path,
    checks: &str,
    base: &str,
    key: &str,
) -> (bool, String) {
    // Its cache goes to the temp dir, not the source tree.
    let out = Command::new(schemathesis)
        .current_dir(dir)
        .env("PYTHONPATH", checks)
        .env("SCHEMATHESIS_HOOKS", "tally_checks")
        .args([
            "run",
            &format!("{base}/v1/openapi.json"),
            "--checks",
            "not_a_server_error,positive_data_acceptance_of_the_document",
            "--max-examples",
            "20",
            "--workers",
            "2",
            "--seed",
            "42",
            "--header",
            &format!("Authorization: Bearer {key}"),
        ])
        .output()
        .expect("run schemathesis");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}
