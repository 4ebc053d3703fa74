//! What the binary's process tests share: a `tally serve` child process with a clean
//! environment, its address read from the first line it prints, stopped with SIGTERM
//! (and waited for) when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `tally serve`.
pub struct Served {
    child: Child,
    /// `http://ADDR`: the API's address, or (without the API role) that of its
    /// `/healthz`, `/readyz` and `/metrics`.
    pub base: String,
}

impl Served {
    /// Starts `tally serve --listen 127.0.0.1:0 --database-url URL ARGS…` with no
    /// `TALLY_*`/`TELEGRAM_*` setting of the test's own environment, rate limits off,
    /// and `env` on top.
    pub fn start(url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        for (name, _) in std::env::vars() {
            if name.starts_with("TALLY_") || name.starts_with("TELEGRAM_") {
                command.env_remove(name);
            }
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            .args(args)
            .env("TALLY_RATE_LIMIT_PER_KEY", "0")
            .env("TALLY_RATE_LIMIT_PER_IP", "0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("start tally serve");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a first line").expect("stdout");
        // Keep reading what the server prints, as a terminal would.
        std::thread::spawn(move || lines.for_each(drop));
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Self { child, base }
    }

    /// `base` + `path`.
    #[allow(dead_code)] // each test binary compiles this module; not all call this
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Served {
    /// Kills the process at once (SIGKILL: no shutdown, as a crash or an OOM kill),
    /// and waits for it.
    #[allow(dead_code)] // each test binary compiles this module; not all call this
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
