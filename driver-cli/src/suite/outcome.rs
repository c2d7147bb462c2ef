//! How each script ended, the summary, and the JUnit suites: each child's own, or one saying why
//! it has none.

use crate::junit;
use anyhow::Context;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How one script ended.
pub enum Outcome {
    Exited {
        status: ExitStatus,
        time: Duration,
    },
    /// It could not be started.
    Unstarted(String),
    /// A signal stopped the suite before its turn.
    NotRun,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Exited { status, .. } if status.success())
    }

    /// `passed`, `failed (exit status 1)`, `failed (killed by SIGKILL)`, `not run`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited { status, .. } if status.success() => "passed".into(),
            Outcome::Exited { status, .. } => format!("failed ({})", exit_status(*status)),
            Outcome::Unstarted(e) => format!("failed (not started: {e})"),
            Outcome::NotRun => "not run".into(),
        }
    }
}

/// How a child ended: `exit status 1`, `killed by SIGKILL`.
fn exit_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
        (None, None) => status.to_string(),
    }
}

/// A signal's name (`SIGTERM`), or its number when it has none.
pub fn signal_name(sig: i32) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), str::to_string)
}

/// The summary: one line per script, then the counts.
pub fn summarize(stems: &[&str], outcomes: &[Outcome]) {
    let width = stems.iter().map(|s| s.len()).max().unwrap_or(0);
    log::info!("summary:");
    for (stem, o) in stems.iter().zip(outcomes) {
        let time = match o {
            Outcome::Exited { time, .. } => format!("  {:.2} s", time.as_secs_f64()),
            _ => String::new(),
        };
        let line = format!("  {stem:width$}  {}{time}", o.describe());
        if o.passed() {
            log::info!("{line}");
        } else {
            log::error!("{line}");
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let not_run = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::NotRun))
        .count();
    let failed = outcomes.len() - passed - not_run;
    let not_run = match not_run {
        0 => String::new(),
        n => format!(", {n} not run"),
    };
    log::info!("{passed} passed, {failed} failed{not_run}");
}

/// The JUnit suite of one script: the one its child wrote, else one saying why there is none.
pub fn suite_of(
    dir: &JunitDir,
    stem: &str,
    outcome: &Outcome,
    kept: Option<&Arc<Mutex<String>>>,
    interrupted: Option<i32>,
) -> quick_junit::TestSuite {
    let output = kept
        .map(|k| k.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let (time, failure) = match outcome {
        Outcome::NotRun => {
            let why = match interrupted {
                Some(sig) => format!("not run: interrupted by {}", signal_name(sig)),
                None => "not run".into(),
            };
            return junit::skipped_suite(stem, &why);
        }
        Outcome::Unstarted(e) => (Duration::ZERO, format!("not started: {e}")),
        Outcome::Exited { status, time } => {
            let failure = format!(
                "vm-test-driver {} ({})",
                exit_status(*status),
                status_meaning(*status)
            );
            match junit::read_suite(&dir.file(stem)) {
                Ok(mut suite) => {
                    // A child that failed must not look green, whatever its file says.
                    if !status.success() && suite.failures == 0 && suite.errors == 0 {
                        suite.add_test_case(junit::failed_case(stem, *time, &failure, &output));
                    }
                    return suite;
                }
                // No file: the script did not get to run (a syntax error, a bad option) or the
                // child died; its log says why.
                Err(e) => {
                    log::debug!("{}: {e:#}", stem);
                    (*time, failure)
                }
            }
        }
    };
    junit::failed_suite(stem, time, &failure, &output)
}

/// What the binary's exit statuses mean.
fn status_meaning(status: ExitStatus) -> &'static str {
    match status.code() {
        Some(0) => "passed",
        Some(1) => "the test failed",
        Some(2) => "usage or setup error",
        Some(101) => "the driver panicked",
        Some(c) if c > 128 => "stopped by a signal",
        _ if status.signal().is_some() => "killed",
        _ => "unexpected exit status",
    }
}

/// A private directory for the children's JUnit files next to the merged one (`.<name>.parts-<pid>`,
/// so a run killed before it could remove it leaves it where the report goes), removed when dropped.
pub struct JunitDir(PathBuf);

impl JunitDir {
    pub fn create(merged: &Path) -> anyhow::Result<JunitDir> {
        let parent = merged
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = merged.file_name().unwrap_or_default().to_string_lossy();
        let dir = parent.join(format!(".{name}.parts-{}", std::process::id()));
        // Left over by an earlier run with our pid that was killed.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(JunitDir(dir))
    }

    pub fn file(&self, stem: &str) -> PathBuf {
        self.0.join(format!("{stem}.xml"))
    }
}

impl Drop for JunitDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
