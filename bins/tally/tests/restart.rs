//! A Postgres restart under load, survived without an operator: a private cluster
//! (initdb into a temp dir, its own port; never the machine's shared server), the real
//! `tally serve` on it with grants and holds coming in, the cluster stopped and started
//! again. Afterwards the server answers and is ready again, holds placed before and
//! after expire by themselves (the reactor took its lease back), read models catch up,
//! and every acknowledged write is in the log exactly once (a retry of an
//! unacknowledged one lands once).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

mod common;
use common::Served;

const SERVICE: &str = "service-key-restart-0123456789";
const ADMIN: &str = "admin-key-restart-0123456789";
const AUDITOR: &str = "auditor-key-restart-0123456789";

/// PostgreSQL's server programs (Debian keeps them per version).
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// Runs a server program as the `postgres` user when we are root (initdb and
/// postgres refuse to run as root).
fn pg(bin: &Path, program: &str, args: &[&str]) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let path = bin.join(program);
    let mut command = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    command
        .args(args)
        .output()
        .expect("run a PostgreSQL program")
}

struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let out = pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "stop"],
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn private_cluster() -> Option<Cluster> {
    let bin = pg_bin()?;
    let dir = tempfile::tempdir().unwrap();
    // The server runs as `postgres`: it must own its directory.
    let _ = Command::new("chown")
        .args(["-R", "postgres", &dir.path().display().to_string()])
        .status();
    let cluster = Cluster {
        bin,
        dir,
        port: free_port(),
    };
    let out = pg(
        &cluster.bin,
        "initdb",
        &[
            "-D",
            &cluster.data(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
    );
    assert!(out.status.success(), "initdb: {out:?}");
    cluster.start();
    Some(cluster)
}

fn serve(url: &str) -> Served {
    let keys = format!("service:bot:{SERVICE},admin:ops:{ADMIN},auditor:aud:{AUDITOR}");
    Served::start(url, &[], &[("TALLY_API_KEYS", &keys)])
}

fn call(
    client: &Client,
    method: &str,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let request = match method {
        "PUT" => client.put(url),
        "POST" => client.post(url),
        _ => client.get(url),
    };
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.bearer_auth(key).send().ok()?;
    let status = response.status();
    Some((status, response.json().unwrap_or(Value::Null)))
}

/// Retries a write with the same id until it is answered 201 (a fresh write or the
/// original's replay).
fn until_created(client: &Client, url: &str, key: &str, body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some((StatusCode::CREATED, answer)) =
            call(client, "POST", url, key, Some(body.clone()))
        {
            return answer;
        }
        assert!(Instant::now() < deadline, "{url} {body} never answered 201");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_postgres_restart_under_load_is_survived_without_an_operator() {
    let Some(cluster) = private_cluster() else {
        panic!(
            "no PostgreSQL server programs under /usr/lib/postgresql (apt-get install postgresql)"
        );
    };
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    let migrated = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["migrate", "--database-url", &url])
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let server = serve(&url);
    let base = server.base.clone();
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, _) = call(
        &client,
        "PUT",
        &format!("{base}/v1/accounts/1"),
        SERVICE,
        Some(json!({})),
    )
    .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    until_created(
        &client,
        &format!("{base}/v1/admin/accounts/1/grants"),
        ADMIN,
        json!({"grant_id": "start", "amount": "100", "reason": "start"}),
    );
    until_created(
        &client,
        &format!("{base}/v1/accounts/1/holds"),
        SERVICE,
        json!({"hold_id": "before", "amount": "10", "ttl_seconds": 2, "reason": "job"}),
    );

    // Load: grants of 1 credit, each id sent until answered or the load stops.
    let stop = Arc::new(AtomicBool::new(false));
    let sent: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let load = {
        let (stop, sent, base, client) = (stop.clone(), sent.clone(), base.clone(), client.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("load-{n}");
                let answered = call(
                    &client,
                    "POST",
                    &format!("{base}/v1/admin/accounts/1/grants"),
                    ADMIN,
                    Some(json!({"grant_id": id, "amount": "1", "reason": "load"})),
                )
                .is_some_and(|(status, _)| status == StatusCode::CREATED);
                sent.lock().unwrap().push((id, answered));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    cluster.stop();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let sent = sent.lock().unwrap().clone();
    // Writes during the outage wait for a connection (or fail, and are sent again
    // below); some were acknowledged either way.
    assert!(
        sent.iter().any(|(_, ok)| *ok),
        "some writes were acknowledged"
    );
    eprintln!(
        "{} writes sent during the restart, {} unanswered",
        sent.len(),
        sent.iter().filter(|(_, ok)| !ok).count()
    );

    // Ready again, without anyone touching the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((StatusCode::OK, _)) =
            call(&client, "GET", &format!("{base}/readyz"), SERVICE, None)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready again after the restart"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Every write sent again with its id: acknowledged ones answer as replays, the
    // others land now; each once.
    let mut last = 0;
    for (id, acknowledged) in &sent {
        let answer = until_created(
            &client,
            &format!("{base}/v1/admin/accounts/1/grants"),
            ADMIN,
            json!({"grant_id": id, "amount": "1", "reason": "load"}),
        );
        last = last.max(answer["position"].as_u64().unwrap());
        let _ = acknowledged;
    }
    // A hold placed after the restart, and the one from before, expire by themselves.
    until_created(
        &client,
        &format!("{base}/v1/accounts/1/holds"),
        SERVICE,
        json!({"hold_id": "after", "amount": "10", "ttl_seconds": 1, "reason": "job"}),
    );
    for hold in ["before", "after"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = call(
                &client,
                "GET",
                &format!("{base}/v1/holds/{hold}"),
                SERVICE,
                None,
            );
            if let Some((StatusCode::OK, body)) = &answer
                && body["state"] == "expired"
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hold {hold} never expired: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Read models caught up with every write: the balance is every grant once.
    let (status, account) = call(
        &client,
        "GET",
        &format!("{base}/v1/accounts/1?min_position={last}"),
        SERVICE,
        None,
    )
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{account}");
    let expected = 100 + sent.len();
    assert_eq!(account["available"], format!("{expected}.00"), "{account}");
    assert_eq!(account["held"], "0.00", "{account}");
    // And the log agrees: each grant id once.
    let mut grants = std::collections::BTreeMap::<String, usize>::new();
    let mut after = 0;
    loop {
        let (status, page) = call(
            &client,
            "GET",
            &format!("{base}/v1/events?after={after}&limit=1000"),
            AUDITOR,
            None,
        )
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{page}");
        let events = page["events"].as_array().unwrap();
        for event in events {
            if event["event_type"] == "credits.granted" {
                *grants
                    .entry(event["payload"]["grant_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            after = event["position"].as_u64().unwrap();
        }
        if events.is_empty() || page["next"].is_null() {
            break;
        }
    }
    for (id, _) in &sent {
        assert_eq!(grants.get(id), Some(&1), "grant {id} is in the log once");
    }
    drop(server);
    drop(cluster);
}
