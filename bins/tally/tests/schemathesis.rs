//! The OpenAPI document fuzzed against a running `tally serve` with schemathesis (from
//! PyPI), once per role: thousands of generated requests, valid and not, and not one
//! answered with a server error. `.ci/run` installs schemathesis into a venv and points
//! `TALLY_SCHEMATHESIS` at it; elsewhere the test looks for `schemathesis` on the PATH
//! and, without it, says so and checks nothing (CI fails instead).
//!
//! Not checked yet: that every request the document calls valid is accepted
//! (schemathesis' `positive_data_acceptance`): the document does not yet state every
//! constraint the server enforces (id charsets, amount formats …).

use std::io::BufRead;
use std::process::{Command, Stdio};

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
fn no_generated_request_gets_a_server_error_for_any_role() {
    let Some(schemathesis) = schemathesis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is missing in CI (.ci/run installs it into a venv)"
        );
        eprintln!("schemathesis not found (pip install schemathesis): the API was not fuzzed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let keys: Vec<String> = KEYS
        .iter()
        .map(|(role, key)| format!("{role}:{role}-fuzz:{key}"))
        .collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TALLY_") || name.starts_with("TELEGRAM_") {
            command.env_remove(name);
        }
    }
    let mut server = command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env("TALLY_API_KEYS", keys.join(","))
        .env(
            "TALLY_WEBHOOK_SECRETS",
            "stars:fuzz-webhook-secret-0123456789",
        )
        .env("TALLY_RATE_LIMIT_PER_KEY", "0")
        .env("TALLY_RATE_LIMIT_PER_IP", "0")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let mut failures = Vec::new();
    for (role, key) in KEYS {
        let out = Command::new(&schemathesis)
            .args([
                "run",
                &format!("{base}/v1/openapi.json"),
                "--checks",
                "not_a_server_error",
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
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        let generated = said
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or("")
            .trim()
            .to_string();
        eprintln!("schemathesis as {role}: {generated}");
        if !out.status.success() || !generated.contains("generated") {
            failures.push(format!(
                "as {role}:\n{said}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
