//! The run report: `report.json` (schema: `driver-cli/report.schema.json`) and `index.html`, which
//! renders the same content for a person: self-contained (inline CSS, screenshots as data URIs, no
//! script, nothing fetched), so a CI artifact is readable on its own.

use crate::script::Case;
use base64::Engine;
use driver::{MachineEvent, MachineRecord, RunRecord, StepRecord};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// Version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;
/// Output lines of a command shown unfolded; longer outputs start folded.
const UNFOLDED_LINES: usize = 12;

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

/// Writes `dir/report.json` and `dir/index.html`.
pub fn write(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("index.html"), html(report))?;
    Ok(())
}

/// Text for HTML: `&`, `<`, `>` and quotes escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A machine name usable in an element id.
fn id_part(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

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
pre.console { max-height: 40em; overflow-y: auto; font-size: 12px; }
pre.console .line { display: block; } pre.console .line:target { background: #fff59d; }
figure img { max-width: 100%; border: 1px solid #ccc; }
"#;

/// The report as a self-contained HTML page.
pub fn html(r: &Report) -> String {
    let mut h = String::new();
    let status = if r.passed { "PASSED" } else { "FAILED" };
    let class = if r.passed { "passed" } else { "failed" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{script}: {status}</title><style>{STYLE}</style></head><body>\n\
         <header class=\"{class}\"><h1 id=\"status\">{script}: {status}</h1>\
         <p>{duration:.2} s · accelerator {accel} · timeouts ×{factor}{interrupted}</p></header>\n",
        script = esc(&r.script),
        duration = r.duration,
        accel = esc(&r.accelerator),
        factor = r.timeout_factor,
        interrupted = r
            .interrupted
            .as_deref()
            .map(|i| format!(" · stopped early: {}", esc(i)))
            .unwrap_or_default(),
    );
    if let Some(c) = &r.coverage {
        let pct = 100.0 * c.lines_hit as f64 / (c.lines_total.max(1)) as f64;
        let _ = writeln!(
            h,
            "<section id=\"coverage\"><h2>Coverage</h2><p>{} of {} lines hit ({pct:.1} %) on {}: \
             <a href=\"file://{}\">the lcov report</a></p></section>",
            c.lines_hit,
            c.lines_total,
            esc(&c.machines.join(", ")),
            esc(&c.html.display().to_string())
        );
    }
    if let Some(e) = &r.error {
        let _ = writeln!(
            h,
            "<section id=\"error\"><h2>Error</h2><pre class=\"error\">{}</pre></section>",
            esc(e)
        );
    }
    tests(&mut h, r);
    steps(&mut h, r);
    h.push_str("<section id=\"machines\"><h2>Machines</h2>\n");
    for m in &r.record.machines {
        machine(&mut h, m, r.duration);
    }
    h.push_str("</section>\n</body></html>\n");
    h
}

fn tests(h: &mut String, r: &Report) {
    h.push_str("<section id=\"tests\"><h2>Tests</h2>\n<ul class=\"tests\">\n");
    if r.tests.is_empty() {
        h.push_str("<li>(no subtests)</li>\n");
    }
    for t in &r.tests {
        // Nested subtests end before their parent; indenting by depth shows the tree.
        let depth = t.name.matches(" > ").count();
        let (mark, class) = if t.passed {
            ("✓", "pass")
        } else {
            ("✗", "fail")
        };
        let _ = write!(
            h,
            "<li class=\"test {class}\" style=\"margin-left:{}em\"><span class=\"{class}\">{mark}</span> \
             {} <span class=\"dur\">{:.2} s</span>",
            depth * 2,
            esc(t.name.rsplit(" > ").next().unwrap_or(&t.name)),
            t.duration
        );
        if let Some(f) = &t.failure {
            let _ = write!(h, "<pre class=\"error\">{}</pre>", esc(f));
        }
        h.push_str("</li>\n");
    }
    h.push_str("</ul></section>\n");
}

fn steps(h: &mut String, r: &Report) {
    h.push_str(
        "<section id=\"steps\"><h2>Steps</h2>\n<table class=\"steps\">\
         <tr><th>start</th><th>duration</th><th>step</th><th>console during it</th></tr>\n",
    );
    for (k, s) in r.record.steps.iter().enumerate() {
        let end = s.end.unwrap_or(r.duration);
        let duration = match s.end {
            Some(_) => format!("{:.2} s", end - s.start),
            None => "unfinished".into(),
        };
        // A subtest's row shows how it ended.
        let outcome = s
            .label
            .strip_prefix("subtest: ")
            .and_then(|name| {
                r.tests
                    .iter()
                    .find(|t| t.name.rsplit(" > ").next() == Some(name))
            })
            .map(|t| match t.passed {
                true => "<span class=\"pass\">✓</span> ",
                false => "<span class=\"fail\">✗</span> ",
            })
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr class=\"step\" id=\"step-{k}\"><td class=\"num\">{:.2} s</td><td class=\"num\">{duration}</td>\
             <td style=\"padding-left:{}em\">{outcome}{}</td><td>",
            s.start,
            0.5 + s.depth as f64 * 1.5,
            esc(&s.label)
        );
        for m in &r.record.machines {
            console_link(h, m, s, end);
        }
        h.push_str("</td></tr>\n");
    }
    h.push_str("</table></section>\n");
}

/// A link to the first console line `m` printed during step `s`, if it printed any.
fn console_link(h: &mut String, m: &MachineRecord, s: &StepRecord, end: f64) {
    if s.machine.as_deref().is_some_and(|name| name != m.name) {
        return;
    }
    let during: Vec<usize> = m
        .console
        .iter()
        .enumerate()
        .filter(|(_, l)| l.t >= s.start && l.t <= end)
        .map(|(i, _)| i)
        .collect();
    if let Some(&first) = during.first() {
        let n = m.console_dropped + first as u64;
        let _ = write!(
            h,
            "<a href=\"#console-{}-{n}\">{}: {} line{}</a> ",
            id_part(&m.name),
            esc(&m.name),
            during.len(),
            if during.len() == 1 { "" } else { "s" }
        );
    }
}

fn machine(h: &mut String, m: &MachineRecord, run: f64) {
    let id = id_part(&m.name);
    let _ = writeln!(
        h,
        "<article class=\"machine\" id=\"machine-{id}\"><h3>{}</h3>",
        esc(&m.name)
    );
    // Where time went: booting, commands, the rest waiting or idle.
    let mut boot = 0.0;
    let mut started = None;
    let mut in_commands = 0.0;
    let mut commands = 0;
    let mut milestones = Vec::new();
    let mut svg = String::new();
    let x = |t: f64| 1000.0 * t / run.max(0.001);
    for e in &m.events {
        match e {
            MachineEvent::Started { t } => {
                started = Some(*t);
                milestones.push(format!("started at {t:.2} s"));
            }
            MachineEvent::Connected { t } => {
                milestones.push(format!("backdoor ready at {t:.2} s"));
                if let Some(s) = started.take() {
                    boot += t - s;
                    let _ = write!(
                        svg,
                        "<rect class=\"boot\" x=\"{:.1}\" y=\"4\" width=\"{:.1}\" height=\"20\">\
                         <title>booting: {:.2} s</title></rect>",
                        x(s),
                        (x(*t) - x(s)).max(1.0),
                        t - s
                    );
                }
            }
            MachineEvent::Command {
                start,
                end,
                command,
                status,
                ..
            } => {
                commands += 1;
                in_commands += end - start;
                let class = if *status == Some(0) { "cmd" } else { "cmdfail" };
                let _ = write!(
                    svg,
                    "<rect class=\"{class}\" x=\"{:.1}\" y=\"8\" width=\"{:.1}\" height=\"12\">\
                     <title>{}: {:.3} s</title></rect>",
                    x(*start),
                    (x(*end) - x(*start)).max(1.0),
                    esc(first_line(command)),
                    end - start
                );
            }
            MachineEvent::Exited { t, status } => {
                milestones.push(format!("QEMU exited at {t:.2} s: {}", esc(status)));
                let _ = write!(
                    svg,
                    "<rect class=\"exit\" x=\"{:.1}\" y=\"0\" width=\"2\" height=\"28\">\
                     <title>QEMU exited: {}</title></rect>",
                    x(*t),
                    esc(status)
                );
            }
            MachineEvent::Screenshot { .. } => {}
        }
    }
    let _ = write!(
        h,
        "<p class=\"milestones\">{}</p>\n\
         <p class=\"summary\">where time went: booting {boot:.2} s · {commands} command{} taking \
         {in_commands:.2} s · the rest of the {run:.2} s run waiting or idle</p>\n\
         <svg class=\"timeline\" viewBox=\"0 0 1000 28\" preserveAspectRatio=\"none\">{svg}</svg>\n",
        milestones.join(" · "),
        if commands == 1 { "" } else { "s" },
    );
    h.push_str("<h4>Commands</h4>\n");
    for (k, e) in m.events.iter().enumerate() {
        if let MachineEvent::Command {
            start,
            end,
            command,
            status,
            output,
        } = e
        {
            let open = if output.lines().count() <= UNFOLDED_LINES {
                " open"
            } else {
                ""
            };
            let status = match status {
                Some(0) => "<span class=\"pass\">exit 0</span>".to_string(),
                Some(s) => format!("<span class=\"fail\">exit {s}</span>"),
                None => "<span class=\"fail\">no exit status (timed out or lost)</span>".into(),
            };
            let _ = writeln!(
                h,
                "<details class=\"command\" id=\"command-{id}-{k}\"{open}><summary>\
                 <span class=\"t\">{start:.2} s</span> <code>{}</code> {status} \
                 <span class=\"dur\">{:.3} s</span></summary><pre>{}</pre></details>",
                esc(command),
                end - start,
                if output.is_empty() {
                    "(no output)".to_string()
                } else {
                    esc(output)
                }
            );
        }
    }
    for e in &m.events {
        if let MachineEvent::Screenshot { t, path } = e {
            let src = match std::fs::read(path) {
                Ok(png) => format!(
                    "data:image/png;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(png)
                ),
                Err(_) => String::new(),
            };
            let _ = writeln!(
                h,
                "<figure class=\"screenshot\"><img src=\"{src}\" alt=\"screenshot of {name} at {t:.2} s\">\
                 <figcaption>{} at {t:.2} s</figcaption></figure>",
                esc(&path.display().to_string()),
                name = esc(&m.name),
            );
        }
    }
    let _ = write!(h, "<h4>Serial console</h4>\n<pre class=\"console\">");
    if m.console_dropped > 0 {
        let _ = writeln!(h, "({} earlier lines not kept)", m.console_dropped);
    }
    for (i, l) in m.console.iter().enumerate() {
        let n = m.console_dropped + i as u64;
        let _ = write!(
            h,
            "<span class=\"line\" id=\"console-{id}-{n}\"><span class=\"t\">{:8.3}</span> {}</span>",
            l.t,
            esc(&strip_ansi(&l.text))
        );
    }
    h.push_str("</pre></article>\n");
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
    use super::*;

    #[test]
    fn escapes_and_strips_terminal_colours() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(
            strip_ansi("[\u{1b}[0;32m  OK  \u{1b}[0m] Started"),
            "[  OK  ] Started"
        );
        assert_eq!(id_part("web server-1"), "web_server_1");
    }
}
