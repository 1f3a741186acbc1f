//! The progress bar of long jobs (indicatif): on stderr, only on a terminal, and only once a
//! job has run for a second, so short jobs and pipelines print nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    /// Whether the bar may appear at all (a terminal, no --quiet).
    enabled: bool,
    shown: bool,
}

/// A bar over `rows`, hidden with `--quiet` or when stderr is not a terminal.
pub fn bar(rows: u64, quiet: bool) -> Progress {
    let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template("{pos}/{len} rows  {per_sec}  ETA {eta}  {wide_bar}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Progress {
        bar,
        start: Instant::now(),
        enabled: !quiet && std::io::stderr().is_terminal(),
        shown: false,
    }
}

impl Progress {
    pub fn set_position(&mut self, rows_done: u64) {
        if self.enabled && !self.shown && self.start.elapsed() > Duration::from_secs(1) {
            self.bar
                .set_draw_target(ProgressDrawTarget::stderr_with_hz(5));
            self.shown = true;
        }
        self.bar.set_position(rows_done);
    }
    /// The job ended: the bar shows the total, then goes.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
    /// The job failed: leave the bar where it stopped.
    pub fn abandon(&self) {
        self.bar.abandon();
    }
}
