//! Hand-built records and reports for the report's unit tests.

use super::data::{Report, TestResult, SCHEMA_VERSION};
use driver::{ConsoleLine, MachineEvent, MachineRecord, RunRecord, StepRecord};

/// A step; `end: None` is one the run was stopped during.
pub fn step(
    label: &str,
    machine: Option<&str>,
    depth: usize,
    start: f64,
    end: Option<f64>,
) -> StepRecord {
    StepRecord {
        label: label.into(),
        machine: machine.map(Into::into),
        depth,
        start,
        end,
    }
}

/// A command that took 10 ms from `start`.
pub fn command(start: f64, command: &str, status: Option<i32>, output: &str) -> MachineEvent {
    MachineEvent::Command {
        start,
        end: start + 0.01,
        command: command.into(),
        status,
        output: output.into(),
    }
}

/// A machine with `events` and console lines `(t, text)`.
pub fn machine(name: &str, events: Vec<MachineEvent>, console: &[(f64, &str)]) -> MachineRecord {
    let mut m = MachineRecord::default();
    m.name = name.into();
    m.events = events;
    m.console = console
        .iter()
        .map(|&(t, text)| ConsoleLine {
            t,
            text: text.into(),
        })
        .collect();
    m
}

/// A failed run of 10 s with `record`, and a failed subtest named `test`.
pub fn report(script: &str, test: &str, record: RunRecord) -> Report {
    Report {
        schema_version: SCHEMA_VERSION,
        script: script.into(),
        passed: false,
        interrupted: None,
        started_unix: 0.0,
        duration: 10.0,
        accelerator: "tcg (no /dev/kvm)".into(),
        timeout_factor: 5.0,
        error: Some(format!("{script}:1:1: {test} failed")),
        tests: vec![TestResult {
            name: test.into(),
            passed: false,
            duration: 1.0,
            failure: Some(format!("{test} failed")),
        }],
        record,
        coverage: None,
    }
}
