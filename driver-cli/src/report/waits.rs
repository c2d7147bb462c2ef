//! A wait's polls folded under the wait. A polling wait (`wait_for_file`, `wait_until_succeeds`,
//! …) runs its command again and again, and listing every try would bury the commands the test
//! itself ran; so a machine's commands that started while one of its waits was in progress become
//! one entry of that wait, the rest stay entries of their own.

use driver::{MachineEvent, MachineRecord, StepRecord};

/// A command as the report shows it, borrowed from the record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Command<'a> {
    /// Its index among the machine's events, stable for an element id.
    pub index: usize,
    /// When it was sent.
    pub start: f64,
    /// When it ended or was given up.
    pub end: f64,
    /// The command text.
    pub command: &'a str,
    /// Its exit status; `None` when it timed out or the machine went away.
    pub status: Option<i32>,
    /// The end of its output.
    pub output: &'a str,
}

/// One entry of a machine's command list, in the order the commands ran.
#[derive(Debug)]
pub enum Entry<'a> {
    /// A command outside every wait of its machine.
    Command(Command<'a>),
    /// The commands (tries) that ran during a wait of the machine, in order; at least one.
    Wait {
        /// The wait's index in the run's steps (its row in the steps table).
        step: usize,
        /// The wait.
        wait: &'a StepRecord,
        /// Its tries.
        tries: Vec<Command<'a>>,
    },
}

/// Whether `s` is a wait of `machine`: the driver labels a machine's waits
/// `<name>: waiting for …` (`tiny: waiting for file /tmp/ready`, `m: waiting for unit nginx`).
pub fn is_wait(s: &StepRecord, machine: &str) -> bool {
    s.machine.as_deref() == Some(machine)
        && s.label
            .strip_prefix(machine)
            .is_some_and(|rest| rest.starts_with(": waiting for "))
}

/// The entries of `m`'s command list, each command of a wait folded into the wait's entry. Waits
/// nest (a unit wait waits for the backdoor shell first): a command goes to the outermost one.
pub fn entries<'a>(steps: &'a [StepRecord], m: &'a MachineRecord) -> Vec<Entry<'a>> {
    let waits: Vec<usize> = (0..steps.len())
        .filter(|&i| is_wait(&steps[i], &m.name))
        .collect();
    let mut out: Vec<Entry> = Vec::new();
    for (index, e) in m.events.iter().enumerate() {
        let MachineEvent::Command {
            start,
            end,
            command,
            status,
            output,
        } = e
        else {
            continue;
        };
        let c = Command {
            index,
            start: *start,
            end: *end,
            command,
            status: *status,
            output,
        };
        // A wait the run was stopped during (no end) holds everything after its start.
        let during = |s: &StepRecord| s.start <= c.start && s.end.is_none_or(|end| c.start <= end);
        let outermost = waits
            .iter()
            .copied()
            .filter(|&w| during(&steps[w]))
            .min_by_key(|&w| (steps[w].depth, w));
        let Some(w) = outermost else {
            out.push(Entry::Command(c));
            continue;
        };
        let folded = out.iter_mut().rev().find_map(|entry| match entry {
            Entry::Wait { step, tries, .. } if *step == w => Some(tries),
            _ => None,
        });
        match folded {
            Some(tries) => tries.push(c),
            None => out.push(Entry::Wait {
                step: w,
                wait: &steps[w],
                tries: vec![c],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{command, machine, step};
    use super::*;

    /// What the entries show: a command's text, or `label: N tries`.
    fn shown(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Command(c) => c.command.to_string(),
                Entry::Wait { wait, tries, .. } => format!("{}: {} tries", wait.label, tries.len()),
            })
            .collect()
    }

    #[test]
    fn a_waits_polls_are_one_entry_and_other_commands_stay() {
        let steps = [
            step("subtest: ready", None, 0, 0.5, Some(3.0)),
            step(
                "tiny: waiting for file /tmp/ready",
                Some("tiny"),
                1,
                1.0,
                Some(2.2),
            ),
            step(
                "tiny: must succeed: echo hi",
                Some("tiny"),
                1,
                2.5,
                Some(2.6),
            ),
        ];
        let mut events = vec![command(0.2, "uname -a", Some(0), "Linux\n")];
        for i in 0..12 {
            let status = if i == 11 { 0 } else { 1 };
            events.push(command(
                1.0 + 0.1 * i as f64,
                "test -e /tmp/ready",
                Some(status),
                "",
            ));
        }
        events.push(command(2.5, "echo hi", Some(0), "hi\n"));
        let m = machine("tiny", events, &[]);
        let entries = entries(&steps, &m);
        assert_eq!(
            shown(&entries),
            [
                "uname -a",
                "tiny: waiting for file /tmp/ready: 12 tries",
                "echo hi"
            ]
        );
        let Entry::Wait { step, tries, .. } = &entries[1] else {
            panic!("not a wait: {:?}", entries[1]);
        };
        assert_eq!(*step, 1);
        assert_eq!(
            (tries[0].index, tries[0].start, tries[0].status),
            (1, 1.0, Some(1))
        );
        let last = tries.last().unwrap();
        assert_eq!((last.index, last.status), (12, Some(0)));
        assert!((last.start - 2.1).abs() < 1e-9);
        let Entry::Command(echo) = &entries[2] else {
            panic!("not a command: {:?}", entries[2]);
        };
        assert_eq!(
            (echo.index, echo.command, echo.status, echo.output),
            (13, "echo hi", Some(0), "hi\n")
        );
    }

    #[test]
    fn another_machines_commands_in_the_same_window_are_not_folded() {
        let steps = [
            step(
                "a: waiting for success: curl b",
                Some("a"),
                0,
                1.0,
                Some(2.0),
            ),
            // Not a wait of b, even though its label mentions b waiting.
            step("b waiting for nothing", Some("b"), 0, 1.0, Some(2.0)),
        ];
        let a = machine(
            "a",
            vec![
                command(1.1, "curl b", Some(7), ""),
                command(1.6, "curl b", Some(0), "ok\n"),
            ],
            &[],
        );
        let b = machine(
            "b",
            vec![
                command(1.2, "systemctl start web", Some(0), ""),
                command(1.3, "true", Some(0), ""),
            ],
            &[],
        );
        assert_eq!(
            shown(&entries(&steps, &a)),
            ["a: waiting for success: curl b: 2 tries"]
        );
        assert_eq!(shown(&entries(&steps, &b)), ["systemctl start web", "true"]);
        // A machine whose name starts another's: `ab: waiting …` is not a wait of `a`.
        let steps = [step("ab: waiting for unit x", Some("a"), 0, 1.0, Some(2.0))];
        assert_eq!(shown(&entries(&steps, &a)), ["curl b", "curl b"]);
    }

    #[test]
    fn nested_waits_fold_into_the_outermost_and_other_nested_steps_do_not_fold() {
        let steps = [
            step("subtest: web", None, 0, 0.0, Some(9.0)),
            step("m: waiting for unit nginx", Some("m"), 1, 1.0, Some(5.0)),
            step(
                "m: waiting for the backdoor shell",
                Some("m"),
                2,
                1.0,
                Some(2.0),
            ),
            step(
                "m: must succeed: curl localhost",
                Some("m"),
                1,
                6.0,
                Some(6.5),
            ),
            step(
                "m: waiting for open port localhost:80",
                Some("m"),
                1,
                7.0,
                None,
            ),
        ];
        let m = machine(
            "m",
            vec![
                command(1.5, "true", Some(0), ""),
                command(3.0, "systemctl is-active nginx", Some(3), "activating\n"),
                command(4.0, "systemctl is-active nginx", Some(0), "active\n"),
                command(6.1, "curl localhost", Some(0), "<html>\n"),
                // After an unfinished wait's start: the run was stopped during it.
                command(7.5, "ss -ltn", Some(0), ""),
                command(20.0, "ss -ltn", None, ""),
            ],
            &[],
        );
        let entries = entries(&steps, &m);
        assert_eq!(
            shown(&entries),
            [
                "m: waiting for unit nginx: 3 tries",
                "curl localhost",
                "m: waiting for open port localhost:80: 2 tries",
            ]
        );
        assert!(matches!(entries[0], Entry::Wait { step: 1, .. }));
    }

    #[test]
    fn a_wait_that_ran_no_command_has_no_entry() {
        let steps = [step(
            "m: waiting for console text /login/",
            Some("m"),
            0,
            1.0,
            Some(2.0),
        )];
        let m = machine("m", vec![command(3.0, "id", Some(0), "")], &[]);
        assert_eq!(shown(&entries(&steps, &m)), ["id"]);
    }
}
