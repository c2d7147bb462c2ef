//! What the report holds: the structs `report.json` serializes (its schema is
//! `driver-cli/report.schema.json`), which the HTML page renders too.

use crate::script::Case;
use driver::RunRecord;
use serde::Serialize;

/// Version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report.
#[derive(Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The test script as given.
    pub script: String,
    /// Whether the run passed.
    pub passed: bool,
    /// Why it stopped early (a signal, the global timeout), if it did.
    pub interrupted: Option<String>,
    /// When the run began, seconds since the Unix epoch.
    pub started_unix: f64,
    /// How long the run lasted, in seconds.
    pub duration: f64,
    /// `kvm` or `tcg`, and why.
    pub accelerator: String,
    /// What timeouts were multiplied by.
    pub timeout_factor: f64,
    /// The error the run failed with, at its script location.
    pub error: Option<String>,
    /// Subtests in the order they ended.
    pub tests: Vec<TestResult>,
    /// Steps, machines, commands and console lines.
    #[serde(flatten)]
    pub record: RunRecord,
    /// The merged coverage of all machines, when `--coverage-report` made one.
    pub coverage: Option<crate::coverage::Summary>,
}

/// One subtest.
#[derive(Serialize)]
pub struct TestResult {
    /// Its name, nested subtests as `outer > inner`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it ran, in seconds.
    pub duration: f64,
    /// The error it failed with.
    pub failure: Option<String>,
}

impl TestResult {
    /// The report's view of a finished subtest.
    pub fn of(case: &Case) -> TestResult {
        TestResult {
            name: case.name.clone(),
            passed: case.failure.is_none(),
            duration: case.time.as_secs_f64(),
            failure: case.failure.clone(),
        }
    }
}
