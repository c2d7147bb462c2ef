//! What a run did, kept for reports: every step with its start and end, each machine's lifecycle,
//! commands with their status and output, screenshots, and console lines, each timed in seconds
//! since the driver was created. Shared (`Send`) with the step guards of [`Activity`](crate::Activity).

use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Console lines kept per machine for the report: the last ones; earlier ones are counted.
const CONSOLE_LINES: usize = 20_000;
/// Bytes of a command's output kept for the report (its end, where errors usually are).
const COMMAND_OUTPUT: usize = 64 * 1024;
/// Bytes of a command's text kept for the report: `write_file` sends whole files as commands.
const COMMAND_TEXT: usize = 4 * 1024;
/// Bytes of command output kept per machine in all: a long wait polls hundreds of times, and a
/// record that grew with each poll would make the driver's memory grow with the test's length.
const COMMAND_OUTPUT_BUDGET: usize = 8 * 1024 * 1024;

/// Everything recorded about a run so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunRecord {
    /// Steps (subtests, waits, commands, nested labels) in the order they began.
    pub steps: Vec<StepRecord>,
    /// Machines in the order they were first seen.
    pub machines: Vec<MachineRecord>,
}

/// One step of the run.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// What it did, as the log says it.
    pub label: String,
    /// The machine it acted on, if one.
    pub machine: Option<String>,
    /// How many steps it was nested in.
    pub depth: usize,
    /// When it began (seconds since the run began).
    pub start: f64,
    /// When it ended; `None` while it runs, or when the run was stopped during it.
    pub end: Option<f64>,
}

/// One machine's history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineRecord {
    /// The machine's name.
    pub name: String,
    /// Lifecycle events and commands, in order.
    pub events: Vec<MachineEvent>,
    /// The last serial console lines, in order.
    pub console: VecDeque<ConsoleLine>,
    /// Earlier console lines not kept: the first line kept is line number `console_dropped`.
    pub console_dropped: u64,
    /// Command output kept so far, against [`COMMAND_OUTPUT_BUDGET`].
    #[serde(skip)]
    output_kept: usize,
}

/// A line of a serial console.
#[derive(Clone, Debug, Serialize)]
pub struct ConsoleLine {
    /// When the line completed.
    pub t: f64,
    /// The line, without its newline.
    pub text: String,
}

/// Something that happened to a machine.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MachineEvent {
    /// QEMU (or the start script) was started.
    Started {
        /// When.
        t: f64,
    },
    /// The backdoor shell answered: the guest is ready for commands.
    Connected {
        /// When.
        t: f64,
    },
    /// A command ran in the guest (or was abandoned).
    Command {
        /// When it was sent.
        start: f64,
        /// When it ended or was given up.
        end: f64,
        /// The command text.
        command: String,
        /// Its exit status; `None` when it timed out or the machine went away.
        status: Option<i32>,
        /// The end of its output (at most 64 KiB).
        output: String,
    },
    /// QEMU exited.
    Exited {
        /// When.
        t: f64,
        /// How, in words.
        status: String,
    },
    /// A screenshot was written.
    Screenshot {
        /// When.
        t: f64,
        /// Where the PNG is.
        path: PathBuf,
    },
}

/// The first `max` bytes of `text` (at a character boundary), saying how much was left out.
fn head_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}[… {} more bytes]", &text[..end], text.len() - end)
}

/// A shared handle on the run's record.
#[derive(Clone)]
pub(crate) struct Recorder {
    t0: Instant,
    record: Arc<Mutex<RunRecord>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            t0: Instant::now(),
            record: Arc::default(),
        }
    }
}

impl Recorder {
    fn record(&self) -> MutexGuard<'_, RunRecord> {
        // Every change below is whole: a panic elsewhere cannot leave the record half-written.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the run began.
    pub(crate) fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Seconds since the run began, at `at`.
    pub(crate) fn at(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// A copy of everything recorded so far.
    pub(crate) fn snapshot(&self) -> RunRecord {
        self.record().clone()
    }

    /// Records a step's beginning; returns its index for [`end_step`](Self::end_step).
    pub(crate) fn begin_step(
        &self,
        label: &str,
        machine: Option<&str>,
        depth: usize,
        at: Instant,
    ) -> usize {
        let start = self.at(at);
        let mut record = self.record();
        record.steps.push(StepRecord {
            label: label.to_string(),
            machine: machine.map(str::to_string),
            depth,
            start,
            end: None,
        });
        record.steps.len() - 1
    }

    pub(crate) fn end_step(&self, index: usize) {
        let end = self.now();
        if let Some(step) = self.record().steps.get_mut(index) {
            step.end = Some(end);
        }
    }

    fn with_machine(&self, name: &str, f: impl FnOnce(&mut MachineRecord)) {
        let mut record = self.record();
        let i = match record.machines.iter().position(|m| m.name == name) {
            Some(i) => i,
            None => {
                record.machines.push(MachineRecord {
                    name: name.to_string(),
                    ..MachineRecord::default()
                });
                record.machines.len() - 1
            }
        };
        f(&mut record.machines[i]);
    }

    pub(crate) fn event(&self, machine: &str, event: MachineEvent) {
        self.with_machine(machine, |m| m.events.push(event));
    }

    pub(crate) fn command(
        &self,
        machine: &str,
        start: Instant,
        command: &str,
        status: Option<i32>,
        output: &[u8],
    ) {
        let (start, end) = (self.at(start), self.now());
        let command = head_text(command, COMMAND_TEXT);
        let output = crate::text::tail_text(output, COMMAND_OUTPUT);
        self.with_machine(machine, |m| {
            let output = if m.output_kept + output.len() <= COMMAND_OUTPUT_BUDGET {
                m.output_kept += output.len();
                output
            } else {
                format!(
                    "[{} bytes not kept: the report keeps {} MiB of command output per machine]",
                    output.len(),
                    COMMAND_OUTPUT_BUDGET >> 20
                )
            };
            m.events.push(MachineEvent::Command {
                start,
                end,
                command,
                status,
                output,
            });
        });
    }

    pub(crate) fn console_line(&self, machine: &str, text: &str) {
        let t = self.now();
        self.with_machine(machine, |m| {
            if m.console.len() == CONSOLE_LINES {
                m.console.pop_front();
                m.console_dropped += 1;
            }
            m.console.push_back(ConsoleLine {
                t,
                text: text.to_string(),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_is_kept_up_to_a_budget_per_machine() {
        let r = Recorder::default();
        let output = vec![b'x'; COMMAND_OUTPUT];
        let fits = COMMAND_OUTPUT_BUDGET / COMMAND_OUTPUT;
        for _ in 0..fits + 2 {
            r.command("a", Instant::now(), "yes | head", Some(0), &output);
        }
        r.command("b", Instant::now(), "echo", Some(0), b"kept\n");
        let record = r.snapshot();
        let outputs: Vec<&str> = record.machines[0]
            .events
            .iter()
            .map(|e| match e {
                MachineEvent::Command { output, .. } => output.as_str(),
                _ => unreachable!(),
            })
            .collect();
        assert!(outputs[..fits].iter().all(|o| o.len() == COMMAND_OUTPUT));
        assert!(
            outputs[fits..].iter().all(|o| o.contains("not kept")),
            "{}",
            outputs[fits]
        );
        assert!(matches!(
            &record.machines[1].events[0],
            MachineEvent::Command { output, .. } if output == "kept\n"
        ));
    }

    #[test]
    fn long_command_texts_are_cut_at_a_character_boundary() {
        assert_eq!(head_text("short", 10), "short");
        assert_eq!(head_text("abcdef", 3), "abc[… 3 more bytes]");
        assert_eq!(head_text("aé", 2), "a[… 2 more bytes]");
    }
}
