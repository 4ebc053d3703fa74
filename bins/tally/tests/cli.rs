//! The `tally` binary as a user runs it: real processes, real databases.
//!
//! One file: each command of the binary as a user runs it, sharing the helpers that run
//! it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::process::{Command, Output};

use tally_store::testing::TestDatabase;

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env_remove("TALLY_DATABASE_URL")
        .env_remove("TALLY_BENCH_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tally")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn bench_report(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "bench failed: {}", stderr(output));
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line, got {text:?}");
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    for key in [
        "backend",
        "writers",
        "events_per_append",
        "events_per_sec",
        "appends_per_sec",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(report.get(key).is_some(), "{key} missing from {report}");
    }
    report
}

#[test]
fn migrate_creates_the_sqlite_ledger_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("tally.db");
    let url = format!("sqlite://{}", path.display());
    for _ in 0..2 {
        let out = tally(&["migrate", "--database-url", &url]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    }
    assert!(
        path.exists(),
        "the database file is created, folder included"
    );
}

#[test]
fn an_unknown_database_url_is_refused_with_what_to_use() {
    let out = tally(&["migrate", "--database-url", "mysql://localhost/tally"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sqlite://PATH nor postgres://"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_append_on_sqlite_prints_one_json_line() {
    let out = tally(&[
        "bench",
        "append",
        "--backend",
        "sqlite",
        "--writers",
        "4",
        "--seconds",
        "1",
    ]);
    let report = bench_report(&out);
    assert_eq!(report["backend"], "sqlite");
    assert_eq!(report["writers"], 4);
    assert!(report["appends"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["events_per_sec"], report["appends_per_sec"]);
}

/// `tally bench poster`: one cycle through the fake Bot API, every post made, one
/// JSON line with the figures.
#[test]
fn bench_poster_posts_every_destination_and_reports() {
    let out = tally(&["bench", "poster", "--slots", "3", "--destinations", "2"]);
    assert!(out.status.success(), "bench failed: {}", stderr(&out));
    let text = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(report["posts"], 6, "{report}");
    for key in [
        "posts_per_sec",
        "fraction_of_limit",
        "rate_limited_429s",
        "cpu_ms_per_post",
    ] {
        assert!(report[key].is_number(), "{key} in {report}");
    }
    let out = tally(&["bench", "poster", "--slots", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--slots must be between 1 and 10000"));
}

#[test]
fn bench_refuses_nonsense_settings() {
    let out = tally(&["bench", "append", "--writers", "0", "--seconds", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--writers must be between"),
        "{}",
        stderr(&out)
    );
    let out = tally(&["bench", "append", "--backend", "postgres", "--seconds", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs --database-url"),
        "{}",
        stderr(&out)
    );
    let out = tally(&[
        "bench",
        "append",
        "--backend",
        "postgres",
        "--database-url",
        "sqlite://x.db",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match"), "{}", stderr(&out));
}

#[tokio::test]
async fn migrate_and_bench_on_postgres() {
    let database = TestDatabase::postgres().await;
    let url = database.url.clone();
    let (migrate, bench) = tokio::task::spawn_blocking(move || {
        let migrate = tally(&["migrate", "--database-url", &url]);
        let bench = tally(&[
            "bench",
            "append",
            "--backend",
            "postgres",
            "--database-url",
            &url,
            "--writers",
            "4",
            "--events-per-append",
            "10",
            "--seconds",
            "1",
        ]);
        (migrate, bench)
    })
    .await
    .unwrap();
    database.drop_database().await;

    assert!(migrate.status.success(), "{}", stderr(&migrate));
    assert!(
        stdout(&migrate).contains("postgres schema"),
        "{}",
        stdout(&migrate)
    );
    let report = bench_report(&bench);
    assert_eq!(report["backend"], "postgres");
    assert_eq!(report["events_per_append"], 10);
    let (events, appends) = (
        report["events_per_sec"].as_u64().unwrap(),
        report["appends_per_sec"].as_u64().unwrap(),
    );
    assert!(appends > 0 && events >= appends * 10 - 10, "{report}");
}

#[test]
fn projections_status_catch_up_and_rebuild_run_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let out = tally(&["projections", "status", "--json", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "accounts",
            "holds",
            "trial_balance",
            "payments",
            "subscriptions",
            "posts",
            "refunds",
            "daily_stats",
            "campaigns"
        ]
    );
    assert!(
        lines
            .iter()
            .all(|l| l["checkpoint"] == 0 && l["lag_events"] == 0)
    );

    let out = tally(&["projections", "catch-up", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("accounts caught up at position 0"),
        "{}",
        stdout(&out)
    );

    let out = tally(&["projections", "rebuild", "accounts", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tally(&["projections", "status", "--json", "--database-url", &url]);
    assert!(
        stdout(&out).contains(r#""generation":2"#),
        "{}",
        stdout(&out)
    );

    let out = tally(&["projections", "rebuild", "balances", "--database-url", &url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no projection named \"balances\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bench_projections_prints_its_figures() {
    let out = tally(&[
        "bench",
        "projections",
        "--events",
        "400",
        "--rate",
        "50",
        "--seconds",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON line");
    for key in ["events", "rebuild_events_per_sec", "catchup_lag_p99_ms"] {
        assert!(report.get(key).is_some(), "{key} missing from {report}");
    }
    assert!(report["events"].as_u64().unwrap() >= 400, "{report}");
    assert!(report["commands"].as_u64().unwrap() >= 40, "{report}");
}

/// A ledger with some history: the projections bench builds one in the file.
fn ledger_with_history(url: &str) {
    let out = tally(&[
        "bench",
        "projections",
        "--database-url",
        url,
        "--events",
        "300",
        "--rate",
        "20",
        "--seconds",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn audit_verify_replay_export_and_events_round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    ledger_with_history(&url);

    let out = tally(&["audit", "verify", "--database-url", &url]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hash chains: ok"), "{text}");
    assert!(text.contains("trial balance: ok"), "{text}");
    assert!(text.contains("projection accounts"), "{text}");
    assert!(!text.contains("PROBLEM"), "{text}");

    let out = tally(&[
        "audit",
        "replay",
        "--user",
        "2",
        "--json",
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let replay: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(replay["consistent"], true, "{replay}");
    let entries = replay["statement"].as_array().unwrap();
    assert!(entries.len() >= 2, "{replay}");
    // User 2 had a deposit, then a job's hold placed and captured (see the bench).
    // Point in time: as of the first entry, the balance is what that entry left.
    let first = entries[0]["position"].as_u64().unwrap().to_string();
    let out = tally(&[
        "audit",
        "replay",
        "--user",
        "2",
        "--at-position",
        &first,
        "--json",
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let then: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(then["statement"].as_array().unwrap().len(), 1);
    assert_eq!(then["recomputed"]["available"], entries[0]["balance_after"]);

    let out = tally(&[
        "audit",
        "export",
        "--user",
        "2",
        "--format",
        "csv",
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    assert!(
        csv.starts_with("position,occurred_at,kind,amount,balance_after"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), entries.len() + 1);
    let out = tally(&[
        "audit",
        "replay",
        "--user",
        "2",
        "--at",
        "yesterday",
        "--database-url",
        &url,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));

    // Export, import into an empty ledger, same read models.
    let out = tally(&["events", "export", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = dir.path().join("log.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let copy = format!("sqlite://{}", dir.path().join("copy.db").display());
    let out = tally(&[
        "events",
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &copy,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["positions_kept"], true);
    assert_eq!(
        report["events_imported"].as_u64().unwrap() as usize,
        String::from_utf8_lossy(&std::fs::read(&file).unwrap())
            .lines()
            .count()
    );
    let out = tally(&["events", "export", "--database-url", &copy]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(without_recorded_at)
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&std::fs::read(&file).unwrap())
            .lines()
            .map(without_recorded_at)
            .collect::<Vec<_>>(),
        "the same events and hashes"
    );
    let out = tally(&["projections", "catch-up", "--database-url", &copy]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tally(&["audit", "verify", "--json", "--database-url", &copy]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tally(&[
        "audit",
        "replay",
        "--user",
        "2",
        "--json",
        "--database-url",
        &copy,
    ]);
    let copied: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(copied["statement"], replay["statement"]);

    // Importing into a ledger that holds other events is refused.
    let out = tally(&[
        "events",
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "the same log again: already present");
    let other = format!("sqlite://{}", dir.path().join("other.db").display());
    ledger_with_history(&other);
    let out = tally(&[
        "events",
        "import",
        file.to_str().unwrap(),
        "--database-url",
        &other,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("empty store"), "{}", stderr(&out));
}

fn without_recorded_at(line: &str) -> serde_json::Value {
    let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
    event.as_object_mut().unwrap().remove("recorded_at");
    event
}

#[test]
fn keys_and_serve_on_sqlite_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let out = tally(&[
        "keys",
        "create",
        "--role",
        "service",
        "--name",
        "bot",
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    assert!(key.starts_with("tally_") && key.len() > 60, "{key}");
    let out = tally(&[
        "keys",
        "create",
        "--role",
        "service",
        "--name",
        "bot",
        "--database-url",
        &url,
    ]);
    assert!(!out.status.success(), "the same name twice");
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    let out = tally(&[
        "keys",
        "create",
        "--role",
        "root",
        "--name",
        "x",
        "--database-url",
        &url,
    ]);
    assert!(
        stderr(&out).contains("none of service, admin, auditor"),
        "{}",
        stderr(&out)
    );
    let out = tally(&["keys", "list", "--database-url", &url]);
    assert!(stdout(&out).contains(r#""name":"bot""#), "{}", stdout(&out));
    assert!(!stdout(&out).contains(&key), "keys are never shown again");

    // `tally serve` in the data directory's parent, as a newcomer runs it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env_remove("TALLY_DATABASE_URL")
        .env_remove("TALLY_API_KEYS")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let client = reqwest::blocking::Client::new();
    let opened = client
        .put(format!("{base}/v1/accounts/5"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"username": "eve"}))
        .send()
        .unwrap();
    assert_eq!(opened.status().as_u16(), 201);
    let denied = client.get(format!("{base}/v1/accounts/5")).send().unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let out = tally(&["keys", "revoke", "bot", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked = client
        .get(format!("{base}/v1/accounts/5"))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(
        revoked.status().as_u16(),
        401,
        "a revoked key is refused at once"
    );
    // SIGTERM: stop accepting, finish, exit 0.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[test]
fn bench_http_against_a_running_server_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .env_remove("TALLY_DATABASE_URL")
        .env(
            "TALLY_API_KEYS",
            "service:bench:service-key-0123456789,admin:ops:admin-key-0123456789ab",
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let out = tally(&[
        "bench",
        "http",
        "--url",
        &base,
        "--key",
        "service-key-0123456789",
        "--admin-key",
        "admin-key-0123456789ab",
        "--concurrency",
        "2",
        "--seconds",
        "1",
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for key in ["requests_per_sec", "p50_ms", "p99_ms", "errors"] {
        assert!(report.get(key).is_some(), "{key} missing from {report}");
    }
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
}

/// Starts `tally serve ARGS` in `dir` with a clean environment; returns the child and,
/// when it runs the API, the address it printed.
fn serve_in(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, Option<String>) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
    command.arg("serve").args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("TALLY_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let api = !args.contains(&"--roles");
    let base = api.then(|| {
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let first = lines.next().unwrap().unwrap();
        // Keep reading what the server prints, as a terminal would.
        std::thread::spawn(move || lines.for_each(drop));
        first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string()
    });
    (child, base)
}

fn terminate(mut child: std::process::Child) -> String {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "exit 0 on SIGTERM, got {status}: {logs}");
    logs
}

#[test]
fn serve_reads_tally_toml_and_runs_its_roles_in_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tally.toml"),
        r#"
database_url = "sqlite://./ledger.db"
listen = "127.0.0.1:0"
roles = "api"
api_keys = "service:bot:service-key-0123456789"
log_format = "json"
"#,
    )
    .unwrap();
    // The API alone (roles from the file): writes land, read models do not move.
    let (api, base) = serve_in(dir.path(), &[]);
    let base = base.unwrap();
    let client = reqwest::blocking::Client::new();
    let opened: serde_json::Value = client
        .put(format!("{base}/v1/accounts/5"))
        .bearer_auth("service-key-0123456789")
        .json(&serde_json::json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let position = opened["position"].as_u64().expect("a position");
    assert!(dir.path().join("ledger.db").exists(), "the file's database");
    // The projector and reactor in a second process (roles from the command line).
    let (worker, none) = serve_in(dir.path(), &["--roles", "projector,reactor"]);
    assert!(none.is_none());
    let account = client
        .get(format!("{base}/v1/accounts/5?min_position={position}"))
        .bearer_auth("service-key-0123456789")
        .send()
        .unwrap();
    assert_eq!(account.status().as_u16(), 200, "{:?}", account.text());
    let logs = terminate(api);
    let first = logs.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first)
        .unwrap_or_else(|e| panic!("log_format = json, got {first:?}: {e}"));
    assert!(line.get("level").is_some(), "{line}");
    let logs = terminate(worker);
    assert!(
        logs.contains("projector") && logs.contains("reactor"),
        "{logs}"
    );

    // Mistakes in the settings are named.
    std::fs::write(dir.path().join("bad.toml"), "listen = 8080\nport = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
    let out = tally(&["serve", "--roles", "api,cashier"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("none of api, projector, reactor"),
        "{}",
        stderr(&out)
    );
}

/// Campaigns in tally.toml: checked at start-up (a mistake named by its key, nothing
/// started), defined in the ledger when the server starts, and not again by a second
/// start.
#[test]
fn campaigns_in_tally_toml_are_checked_then_defined_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = |post_id: &str| {
        format!(
            r#"
database_url = "sqlite://./ledger.db"
listen = "127.0.0.1:0"
roles = "api"

[campaigns.spring]
name = "Spring baking"
operator = 9001
channels = [{{ chat_id = -1001234567890 }}]

[[campaigns.spring.posts]]
post_id = "{post_id}"
content = "Learn to bake"
buttons = [
  {{ label = "Recipe", target = {{ url = "https://bake.example/recipe" }} }},
  {{ label = "Try the bot", target = "start" }},
]
"#
        )
    };
    std::fs::write(dir.path().join("tally.toml"), file("p-1")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve"])
        .current_dir(dir.path())
        .env_remove("TALLY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tally.toml campaigns.spring: post id \"p-1\""),
        "{}",
        stderr(&out)
    );
    std::fs::write(dir.path().join("tally.toml"), file("p1")).unwrap();
    for _ in 0..2 {
        let (server, base) = serve_in(dir.path(), &[]);
        // Serving (its signal handling set up) before it is told to stop.
        let healthy = reqwest::blocking::get(format!("{}/healthz", base.unwrap()))
            .map(|r| r.status().as_u16());
        assert_eq!(healthy.ok(), Some(200));
        terminate(server);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["events", "export", "--database-url", "sqlite://./ledger.db"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stdout(&out);
    let count = |kind: &str| log.matches(&format!("\"{kind}\"")).count();
    assert_eq!(count("campaign.defined"), 1, "{log}");
    assert_eq!(count("slot.configured"), 1, "{log}");
    assert!(log.contains("cmp.spring.p1"), "{log}");
}

#[test]
fn the_bot_role_without_a_token_or_with_bad_admin_ids_is_refused_with_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let out = tally(&["serve", "--database-url", &url, "--roles", "bot"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TELEGRAM_BOT_TOKEN"),
        "{}",
        stderr(&out)
    );
    let out = tally(&[
        "serve",
        "--database-url",
        &url,
        "--roles",
        "bot",
        "--telegram-bot-token",
        "123:abc",
        "--admin-ids",
        "42,alice",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TALLY_ADMIN_IDS: admin id \"alice\" is not a Telegram user id"),
        "{}",
        stderr(&out)
    );
    // The poster posts through the bot: it needs the token too, and a sane cycle.
    let out = tally(&["serve", "--database-url", &url, "--roles", "poster"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TELEGRAM_BOT_TOKEN"),
        "{}",
        stderr(&out)
    );
    let out = tally(&[
        "serve",
        "--database-url",
        &url,
        "--roles",
        "poster",
        "--telegram-bot-token",
        "123:abc",
        "--post-cycle-seconds",
        "5",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("TALLY_POST_CYCLE_SECONDS is 5; at least 60"),
        "{}",
        stderr(&out)
    );
}

/// Money settings are checked before anything starts: a provider's unknown key, a
/// missing secret, or a pack without a price in a provider's currency stops `tally
/// serve` with the key to set; the same file with the price added serves.
#[test]
fn payment_providers_and_prices_are_checked_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |toml: &str| {
        std::fs::write(dir.path().join("tally.toml"), toml).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
        command.arg("serve").current_dir(dir.path());
        for (name, _) in std::env::vars() {
            if name.starts_with("TALLY_") {
                command.env_remove(name);
            }
        }
        command
    };
    let head = "database_url = \"sqlite://./ledger.db\"\nlisten = \"127.0.0.1:0\"\n";
    let pack = "[credit_packs.pack_5]\ncredits = \"5\"\nprice = \"50\"\ncurrency = \"XTR\"\n";
    let refused = |toml: String, env: &[(&str, &str)], says: &str| {
        let mut command = serve(&toml);
        command.envs(env.iter().copied());
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{out:?}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    };
    refused(
        format!("{head}[providers.paystack]\nsecret = \"sk_test_x\"\n"),
        &[],
        "providers.paystack.secret (TALLY_PROVIDERS_PAYSTACK_SECRET) is not a setting of paystack",
    );
    refused(
        format!("{head}[providers.yookassa]\nshop_id = \"1\"\nsecret_key = \"k\"\n"),
        &[],
        "providers.yookassa.return_url (TALLY_PROVIDERS_YOOKASSA_RETURN_URL) is required",
    );
    refused(
        format!("{head}{pack}"),
        &[("TALLY_PROVIDERS_PAYSTACK_SECRET_KEY", "sk_test_0000")],
        "credit_packs.pack_5.prices.NGN is not set",
    );
    let priced = format!("{head}{pack}prices = {{ NGN = \"1500\" }}\n");
    refused(
        format!("{head}{pack}prices = {{ NGN = \"1500.005\" }}\n"),
        &[("TALLY_PROVIDERS_PAYSTACK_SECRET_KEY", "sk_test_0000")],
        "amount 1500.005 has more than 2 decimal places",
    );
    std::fs::write(dir.path().join("tally.toml"), &priced).unwrap();
    let (server, base) = serve_in(dir.path(), &[]);
    assert!(base.is_some());
    terminate(server);
}

/// `tally bench webhooks` prints one JSON line: a paced run and the throughput runs,
/// every delivery made, with the sequential baseline beside them.
#[test]
fn bench_webhooks_delivers_everything_and_reports() {
    let out = tally(&[
        "bench",
        "webhooks",
        "--endpoints",
        "1,3",
        "--events",
        "20",
        "--pace-per-sec",
        "100",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 1, "one JSON line: {lines:?}");
    let report: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{report}");
    assert_eq!(runs[0]["kind"], "paced");
    assert_eq!(runs[2]["endpoints"], 3);
    assert_eq!(runs[2]["deliveries"], 60);
    assert!(
        runs.iter()
            .all(|r| r["lag_p99_ms"].as_f64().unwrap() >= 0.0)
    );
    assert!(
        report["baseline_sequential_posts_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}
