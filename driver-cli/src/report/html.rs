//! `index.html`: the report as a self-contained page (inline CSS, screenshots as data URIs, no
//! script, nothing fetched). Built with maud: every string from the run is spliced in as `(value)`,
//! which maud escapes, so a command, an output or a console line cannot become markup. The only
//! unescaped text is [`STYLE`], a constant of ours.

use super::data::Report;
use super::waits::{self, Command, Entry};
use base64::Engine;
use driver::{MachineEvent, MachineRecord, StepRecord};
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// Output lines of a command shown unfolded; longer outputs start folded.
const UNFOLDED_LINES: usize = 12;

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 2em 4em; color: #222; }
header { padding: .6em 1em; margin: 0 -2em 1em; color: #fff; }
header.passed { background: #2e7d32; } header.failed { background: #c62828; }
header h1 { margin: 0; font-size: 1.5em; } header p { margin: .2em 0 0; }
h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
pre { background: #f6f6f6; padding: .5em; overflow-x: auto; white-space: pre-wrap; }
pre.error { background: #fdecea; border-left: 4px solid #c62828; }
.pass { color: #2e7d32; } .fail { color: #c62828; } .dur, .t { color: #777; }
ul.tests { list-style: none; padding-left: 1em; } ul.tests li { margin: .15em 0; }
table.steps { border-collapse: collapse; width: 100%; }
table.steps td, table.steps th { padding: .1em .5em; text-align: left; vertical-align: top; }
table.steps tr:nth-child(even) { background: #fafafa; }
table.steps td.num { text-align: right; white-space: nowrap; color: #555; }
.timeline { width: 100%; height: 28px; background: #eee; display: block; margin: .4em 0; }
.timeline .boot { fill: #90caf9; } .timeline .cmd { fill: #455a64; } .timeline .cmdfail { fill: #c62828; }
.timeline .exit { fill: #000; }
details.command summary { cursor: pointer; } details.command { margin: .2em 0; }
details.wait .tries { font-weight: bold; } details.wait a.wait { color: inherit; }
details.wait p.attempts { margin: .2em 0 .2em 1.2em; color: #555; }
details.tries { margin-left: 1.2em; } details.tries summary { cursor: pointer; color: #555; }
pre.console { max-height: 40em; overflow-y: auto; font-size: 12px; }
pre.console .line { display: block; } pre.console .line:target { background: #fff59d; }
figure img { max-width: 100%; border: 1px solid #ccc; }
"#;

/// The report as a self-contained HTML page.
pub fn page(r: &Report) -> String {
    let status = if r.passed { "PASSED" } else { "FAILED" };
    let class = if r.passed { "passed" } else { "failed" };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (r.script) ": " (status) }
                // CSS is raw text in HTML: entity escapes would not be decoded there.
                style { (PreEscaped(STYLE)) }
            }
            body {
                header class=(class) {
                    h1 id="status" { (r.script) ": " (status) }
                    p {
                        (format!("{:.2}", r.duration)) " s · accelerator " (r.accelerator)
                        " · timeouts ×" (r.timeout_factor.to_string())
                        @if let Some(i) = &r.interrupted { " · stopped early: " (i) }
                    }
                }
                @if let Some(c) = &r.coverage {
                    section id="coverage" {
                        h2 { "Coverage" }
                        p {
                            (format!(
                                "{} of {} lines hit ({:.1} %) on ",
                                c.lines_hit,
                                c.lines_total,
                                100.0 * c.lines_hit as f64 / (c.lines_total.max(1)) as f64
                            ))
                            (c.machines.join(", ")) ": "
                            a href=(format!("file://{}", c.html.display())) { "the lcov report" }
                        }
                    }
                }
                @if let Some(e) = &r.error {
                    section id="error" { h2 { "Error" } pre class="error" { (e) } }
                }
                (tests(r))
                (steps(r))
                section id="machines" {
                    h2 { "Machines" }
                    @for m in &r.record.machines { (machine(m, &r.record.steps, r.duration)) }
                }
            }
        }
    };
    page.into_string()
}

fn tests(r: &Report) -> Markup {
    html! {
        section id="tests" {
            h2 { "Tests" }
            ul class="tests" {
                @if r.tests.is_empty() { li { "(no subtests)" } }
                @for t in &r.tests {
                    @let (mark, class) = if t.passed { ("✓", "pass") } else { ("✗", "fail") };
                    // Nested subtests end before their parent; indenting by depth shows the tree.
                    @let depth = t.name.matches(" > ").count();
                    li class={ "test " (class) } style={ "margin-left:" (depth * 2) "em" } {
                        span class=(class) { (mark) } " "
                        (t.name.rsplit(" > ").next().unwrap_or(&t.name)) " "
                        span class="dur" { (format!("{:.2} s", t.duration)) }
                        @if let Some(f) = &t.failure { pre class="error" { (f) } }
                    }
                }
            }
        }
    }
}

fn steps(r: &Report) -> Markup {
    html! {
        section id="steps" {
            h2 { "Steps" }
            table class="steps" {
                tr { th { "start" } th { "duration" } th { "step" } th { "console during it" } }
                @for (k, s) in r.record.steps.iter().enumerate() {
                    @let end = s.end.unwrap_or(r.duration);
                    // A subtest's row shows how it ended.
                    @let passed = s
                        .label
                        .strip_prefix("subtest: ")
                        .and_then(|name| {
                            r.tests.iter().find(|t| t.name.rsplit(" > ").next() == Some(name))
                        })
                        .map(|t| t.passed);
                    tr class="step" id=(format!("step-{k}")) {
                        td class="num" { (format!("{:.2} s", s.start)) }
                        td class="num" {
                            @match s.end {
                                Some(_) => (format!("{:.2} s", end - s.start)),
                                None => "unfinished",
                            }
                        }
                        td style=(format!("padding-left:{}em", 0.5 + s.depth as f64 * 1.5)) {
                            @match passed {
                                Some(true) => { span class="pass" { "✓" } " " }
                                Some(false) => { span class="fail" { "✗" } " " }
                                None => {}
                            }
                            (s.label)
                        }
                        td {
                            @for m in &r.record.machines { (console_link(m, s, end)) }
                        }
                    }
                }
            }
        }
    }
}

/// A link to the first console line `m` printed during step `s`, if it printed any.
fn console_link(m: &MachineRecord, s: &StepRecord, end: f64) -> Markup {
    if s.machine.as_deref().is_some_and(|name| name != m.name) {
        return html! {};
    }
    let during: Vec<usize> = m
        .console
        .iter()
        .enumerate()
        .filter(|(_, l)| l.t >= s.start && l.t <= end)
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = during.first() else {
        return html! {};
    };
    let n = m.console_dropped + first as u64;
    html! {
        a href=(format!("#console-{}-{n}", id_part(&m.name))) {
            (m.name) ": " (during.len()) " line" @if during.len() != 1 { "s" }
        }
        " "
    }
}

/// A bar of a machine's timeline.
struct Bar {
    class: &'static str,
    x: f64,
    y: u32,
    /// As the attribute says it (`2` for the exit mark, one decimal for the others).
    width: String,
    height: u32,
    title: String,
}

/// Where a machine's time went: booting, commands, the rest waiting or idle.
#[derive(Default)]
struct Timeline {
    boot: f64,
    in_commands: f64,
    commands: usize,
    milestones: Vec<String>,
    bars: Vec<Bar>,
}

impl Timeline {
    fn of(m: &MachineRecord, run: f64) -> Timeline {
        let mut tl = Timeline::default();
        let mut started = None;
        let x = |t: f64| 1000.0 * t / run.max(0.001);
        for e in &m.events {
            match e {
                MachineEvent::Started { t } => {
                    started = Some(*t);
                    tl.milestones.push(format!("started at {t:.2} s"));
                }
                MachineEvent::Connected { t } => {
                    tl.milestones.push(format!("backdoor ready at {t:.2} s"));
                    if let Some(s) = started.take() {
                        tl.boot += t - s;
                        tl.bars.push(Bar {
                            class: "boot",
                            x: x(s),
                            y: 4,
                            width: format!("{:.1}", (x(*t) - x(s)).max(1.0)),
                            height: 20,
                            title: format!("booting: {:.2} s", t - s),
                        });
                    }
                }
                MachineEvent::Command {
                    start,
                    end,
                    command,
                    status,
                    ..
                } => {
                    tl.commands += 1;
                    tl.in_commands += end - start;
                    tl.bars.push(Bar {
                        class: if *status == Some(0) { "cmd" } else { "cmdfail" },
                        x: x(*start),
                        y: 8,
                        width: format!("{:.1}", (x(*end) - x(*start)).max(1.0)),
                        height: 12,
                        title: format!("{}: {:.3} s", first_line(command), end - start),
                    });
                }
                MachineEvent::Exited { t, status } => {
                    tl.milestones
                        .push(format!("QEMU exited at {t:.2} s: {status}"));
                    tl.bars.push(Bar {
                        class: "exit",
                        x: x(*t),
                        y: 0,
                        width: "2".into(),
                        height: 28,
                        title: format!("QEMU exited: {status}"),
                    });
                }
                MachineEvent::Screenshot { .. } => {}
            }
        }
        tl
    }
}

fn machine(m: &MachineRecord, steps: &[StepRecord], run: f64) -> Markup {
    let id = id_part(&m.name);
    let tl = Timeline::of(m, run);
    html! {
        article class="machine" id=(format!("machine-{id}")) {
            h3 { (m.name) }
            p class="milestones" { (tl.milestones.join(" · ")) }
            p class="summary" {
                (format!(
                    "where time went: booting {:.2} s · {} command{} taking {:.2} s · the rest of \
                     the {run:.2} s run waiting or idle",
                    tl.boot,
                    tl.commands,
                    if tl.commands == 1 { "" } else { "s" },
                    tl.in_commands
                ))
            }
            svg class="timeline" viewBox="0 0 1000 28" preserveAspectRatio="none" {
                @for b in &tl.bars {
                    rect class=(b.class) x=(format!("{:.1}", b.x)) y=(b.y)
                        width=(b.width) height=(b.height) {
                        title { (b.title) }
                    }
                }
            }
            h4 { "Commands" }
            @for entry in waits::entries(steps, m) {
                @match entry {
                    Entry::Command(c) => (command(&id, &c, short(c.output))),
                    Entry::Wait { step, wait, tries } => (folded_wait(&id, step, wait, &tries)),
                }
            }
            @for e in &m.events {
                @if let MachineEvent::Screenshot { t, path } = e {
                    figure class="screenshot" {
                        img src=(data_uri(path))
                            alt=(format!("screenshot of {} at {t:.2} s", m.name));
                        figcaption { (path.display().to_string()) (format!(" at {t:.2} s")) }
                    }
                }
            }
            h4 { "Serial console" }
            pre class="console" {
                @if m.console_dropped > 0 {
                    (format!("({} earlier lines not kept)\n", m.console_dropped))
                }
                @for (i, l) in m.console.iter().enumerate() {
                    @let n = m.console_dropped + i as u64;
                    span class="line" id=(format!("console-{id}-{n}")) {
                        span class="t" { (format!("{:8.3}", l.t)) } " " (strip_ansi(&l.text))
                    }
                }
            }
        }
    }
}

/// A command: when, what, how it ended and how long it took, its output below.
fn command(id: &str, c: &Command, open: bool) -> Markup {
    html! {
        details class="command" id=(format!("command-{id}-{}", c.index)) open[open] {
            summary {
                span class="t" { (format!("{:.2} s", c.start)) } " "
                code { (c.command) } " "
                (exit_status(c.status)) " "
                span class="dur" { (format!("{:.3} s", c.end - c.start)) }
            }
            pre { (output(c.output)) }
        }
    }
}

/// The commands a wait ran, as one entry: how many tries, the first and the last, the last one's
/// output; each try in a folded list.
fn folded_wait(id: &str, step: usize, wait: &StepRecord, tries: &[Command]) -> Markup {
    let (Some(first), Some(last)) = (tries.first(), tries.last()) else {
        return html! {};
    };
    let n = match tries.len() {
        1 => "1 try".to_string(),
        n => format!("{n} tries"),
    };
    html! {
        details class="command wait" id=(format!("wait-{id}-{step}"))
            open[short(last.output)] {
            summary {
                span class="t" { (format!("{:.2} s", wait.start)) } " "
                a class="wait" href=(format!("#step-{step}")) { (wait.label) } " "
                span class="tries" { (n) } " "
                (exit_status(last.status)) " "
                span class="dur" {
                    @match wait.end {
                        Some(end) => (format!("{:.3} s", end - wait.start)),
                        None => "unfinished",
                    }
                }
            }
            p class="attempts" {
                @if tries.len() == 1 {
                    "one try at " (format!("{:.2} s", first.start)) ": " (exit_status(first.status))
                    " · its output:"
                } @else {
                    "first try at " (format!("{:.2} s", first.start)) ": "
                    (exit_status(first.status))
                    " · last try at " (format!("{:.2} s", last.start)) ": "
                    (exit_status(last.status))
                    " · the last try's output:"
                }
            }
            pre { (output(last.output)) }
            details class="tries" {
                summary {
                    @if tries.len() == 1 { "the try" } @else { "the " (n) " one by one" }
                }
                @for c in tries { (command(id, c, false)) }
            }
        }
    }
}

/// Whether `output` is short enough to be shown unfolded.
fn short(output: &str) -> bool {
    output.lines().count() <= UNFOLDED_LINES
}

/// A command's output, or a word that there was none.
fn output(text: &str) -> Markup {
    html! { @if text.is_empty() { "(no output)" } @else { (text) } }
}

/// A command's exit status, coloured.
fn exit_status(status: Option<i32>) -> Markup {
    html! {
        @match status {
            Some(0) => span class="pass" { "exit 0" },
            Some(s) => span class="fail" { "exit " (s) },
            None => span class="fail" { "no exit status (timed out or lost)" },
        }
    }
}

/// A screenshot as a `data:` URI, so the page needs no file beside it; empty when unreadable.
fn data_uri(path: &std::path::Path) -> String {
    match std::fs::read(path) {
        Ok(png) => format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        ),
        Err(_) => String::new(),
    }
}

/// A machine name usable in an element id.
fn id_part(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// `s` without terminal escape sequences (systemd colours its status lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, up to the final byte.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{command, machine, report, step};
    use super::*;
    use driver::RunRecord;

    const HOSTILE: &str = "<script>alert(1)</script> \"&'";
    const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&amp;'";

    #[test]
    fn strips_terminal_colours_and_makes_ids() {
        assert_eq!(
            strip_ansi("[\u{1b}[0;32m  OK  \u{1b}[0m] Started"),
            "[  OK  ] Started"
        );
        assert_eq!(id_part("web server-1"), "web_server_1");
    }

    /// The page of a run whose machine `tiny` waited for a file (12 tries), then ran `echo hi`.
    fn waited_for_a_file() -> String {
        let mut record = RunRecord::default();
        record
            .steps
            .push(step("subtest: ready", None, 0, 0.5, Some(3.0)));
        record.steps.push(step(
            "tiny: waiting for file /tmp/ready",
            Some("tiny"),
            1,
            1.0,
            Some(2.2),
        ));
        let mut events: Vec<_> = (0..12)
            .map(|i| {
                let status = if i == 11 { 0 } else { 1 };
                command(1.0 + 0.1 * i as f64, "test -e /tmp/ready", Some(status), "")
            })
            .collect();
        events.push(command(2.5, "echo hi", Some(0), "hi\n"));
        record.machines.push(machine("tiny", events, &[]));
        page(&report("t.rhai", "ready", record))
    }

    #[test]
    fn a_waits_tries_are_one_entry_with_each_try_folded_below() {
        let page = waited_for_a_file();
        // One entry for the wait, linked to its step, with how many tries and how the last ended.
        assert_eq!(
            page.matches("<details class=\"command wait\"").count(),
            1,
            "{page}"
        );
        let wait = &page[page.find("<details class=\"command wait\"").unwrap()..];
        assert!(wait.starts_with(
            "<details class=\"command wait\" id=\"wait-tiny-1\" open><summary>\
             <span class=\"t\">1.00 s</span> \
             <a class=\"wait\" href=\"#step-1\">tiny: waiting for file /tmp/ready</a> \
             <span class=\"tries\">12 tries</span> <span class=\"pass\">exit 0</span> \
             <span class=\"dur\">1.200 s</span></summary>"
        ));
        // The first and the last try, and the last one's output.
        assert!(wait.contains(
            "<p class=\"attempts\">first try at 1.00 s: <span class=\"fail\">exit 1</span> · \
             last try at 2.10 s: <span class=\"pass\">exit 0</span> · the last try's output:</p>\
             <pre>(no output)</pre>"
        ));
        // Each try below, folded (no `open`), as commands are shown.
        let tries = &wait[wait.find("<details class=\"tries\">").unwrap()..];
        assert!(tries.starts_with("<details class=\"tries\"><summary>the 12 tries one by one"));
        let each = tries.matches("<code>test -e /tmp/ready</code>").count();
        assert_eq!(each, 12);
        assert!(tries.contains("<details class=\"command\" id=\"command-tiny-0\"><summary>"));
        assert!(tries.contains("<details class=\"command\" id=\"command-tiny-11\"><summary>"));
        // Outside the wait, a command is shown as before.
        assert_eq!(page.matches("<code>").count(), 13);
        assert!(page.contains(
            "<details class=\"command\" id=\"command-tiny-12\" open><summary>\
             <span class=\"t\">2.50 s</span> <code>echo hi</code> \
             <span class=\"pass\">exit 0</span> <span class=\"dur\">0.010 s</span></summary>\
             <pre>hi\n</pre></details>"
        ));
        // The timeline and the time summary still count every command.
        assert!(page.contains("13 commands taking 0.13 s"), "{page}");
    }

    #[test]
    fn strings_from_the_run_come_out_escaped() {
        let name = HOSTILE;
        let mut record = RunRecord::default();
        record.steps.push(step(
            &format!("{name}: must succeed: echo {HOSTILE}"),
            Some(name),
            0,
            1.0,
            Some(2.0),
        ));
        record.steps.push(step(
            &format!("{name}: waiting for file {HOSTILE}"),
            Some(name),
            0,
            2.5,
            Some(2.8),
        ));
        record.machines.push(machine(
            name,
            vec![
                command(
                    1.0,
                    &format!("echo {HOSTILE}"),
                    Some(0),
                    &format!("{HOSTILE}\n"),
                ),
                command(2.6, &format!("test -e {HOSTILE}"), Some(0), HOSTILE),
                driver::MachineEvent::Exited {
                    t: 3.0,
                    status: HOSTILE.into(),
                },
            ],
            &[(1.5, &format!("\u{1b}[1m{HOSTILE}\u{1b}[0m"))],
        ));
        let mut r = report(HOSTILE, HOSTILE, record);
        r.interrupted = Some(HOSTILE.into());
        r.accelerator = HOSTILE.into();
        let page = page(&r);
        // Nothing from the run became markup: the page has no script element and no raw quote.
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("\"&'"), "{page}");
        for escaped in [
            // The command, its output, the step label, the machine name and the console line.
            format!("<code>echo {ESCAPED}</code>"),
            format!("<pre>{ESCAPED}\n</pre>"),
            format!("{ESCAPED}: must succeed: echo {ESCAPED}</td>"),
            format!("<h3>{ESCAPED}</h3>"),
            // A wait's label and its last try's output, in the folded entry.
            format!("href=\"#step-1\">{ESCAPED}: waiting for file {ESCAPED}</a>"),
            format!("<pre>{ESCAPED}</pre>"),
            format!("<span class=\"t\">   1.500</span> {ESCAPED}</span>"),
            // The script, the test and its failure, the error, the exit status.
            format!("<h1 id=\"status\">{ESCAPED}: FAILED</h1>"),
            format!("<pre class=\"error\">{ESCAPED} failed</pre>"),
            format!("QEMU exited: {ESCAPED}</title>"),
        ] {
            assert!(page.contains(&escaped), "no {escaped:?} in {page}");
        }
        // The wait ran one command: said so, rather than "first" and "last".
        assert!(
            page.contains("one try at 2.60 s: <span class=\"pass\">exit 0</span> · its output:")
        );
        // Element ids and links use the name reduced to characters an id can hold.
        let id = id_part(name);
        assert!(page.contains(&format!("id=\"machine-{id}\"")));
        assert!(page.contains(&format!("href=\"#console-{id}-0\"")));
    }
}
