//! Progress of long jobs (rebuild, export, import, verify): a bar on a terminal, a
//! plain log line every few seconds otherwise (CI logs, systemd journals).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a log line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports how far a job is.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last_log: Instant,
}

impl Progress {
    /// A job named `label` of `total` units (0: unknown).
    pub fn new(label: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            bar
        });
        Self {
            bar,
            label: label.to_string(),
            last_log: Instant::now(),
        }
    }

    /// `done` of `total` units; `stage` renames the job when it changes.
    pub fn set(&mut self, stage: &str, done: u64, total: u64) {
        if stage != self.label {
            self.label = stage.to_string();
            if let Some(bar) = &self.bar {
                bar.set_message(stage.to_string());
            }
        }
        match &self.bar {
            Some(bar) => {
                bar.set_length(total.max(done));
                bar.set_position(done);
            }
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                tracing::info!(job = %self.label, done, total, "progress");
            }
            None => {}
        }
    }

    /// The job is over.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
