//! The run's log: timed lines indented by the steps in progress, machine-coloured on a terminal and
//! plain in a log file, each serial console also in its own file, lines kept for JUnit, and a live
//! status line naming the wait in progress.

use driver::{Activity, STEP_END};
use std::collections::HashMap;
use std::fs::File;
use std::io::{IsTerminal, LineWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The log target the driver gives serial console lines (`name# line`).
const CONSOLE: &str = "console";
/// A wait shows in the status line once it has lasted this long.
const STATUS_AFTER: Duration = Duration::from_secs(1);
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// The process's one log; `log` records go here once [`init`] ran.
pub struct Output {
    t0: Instant,
    level: log::LevelFilter,
    colour: bool,
    tty: bool,
    activity: OnceLock<Activity>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    file: Option<LineWriter<File>>,
    console_dir: Option<PathBuf>,
    consoles: HashMap<String, LineWriter<File>>,
    /// Every plain line, when a JUnit file wants each subtest's output.
    kept: Option<Vec<String>>,
    /// The status line on screen, if any.
    status_shown: Option<String>,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Installs the log and returns it. Its level is `RUST_LOG`'s, else `level`, else info: nixpkgs'
/// wrapper always passes `--log-level`, so `RUST_LOG` must win to debug a wrapped run.
pub fn init(level: Option<log::LevelFilter>) -> &'static Output {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .or(level)
        .unwrap_or(log::LevelFilter::Info);
    let tty = std::io::stderr().is_terminal();
    let out = OUTPUT.get_or_init(|| Output {
        t0: Instant::now(),
        level,
        colour: tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        tty,
        activity: OnceLock::new(),
        state: Mutex::new(State::default()),
    });
    if log::set_logger(out).is_ok() {
        log::set_max_level(level);
    }
    out
}

impl Output {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Indents lines by the driver's steps, and on a terminal shows the wait in progress.
    pub fn follow(&'static self, activity: Activity) {
        if self.activity.set(activity).is_ok() && self.tty {
            std::thread::spawn(move || loop {
                std::thread::sleep(STATUS_EVERY);
                self.draw_status();
            });
        }
    }

    /// Writes the log, plain, to `file` as well, and each machine's console to `dir/<name>.console.log`.
    pub fn write_to(&self, file: &Path, console_dir: &Path) -> std::io::Result<()> {
        let f = File::create(file)?;
        let mut st = self.state();
        st.file = Some(LineWriter::new(f));
        st.console_dir = Some(console_dir.to_path_buf());
        Ok(())
    }

    /// Starts keeping lines for [`lines_since`](Self::lines_since).
    pub fn keep_lines(&self) {
        self.state().kept.get_or_insert_with(Vec::new);
    }

    /// A mark for [`lines_since`](Self::lines_since).
    pub fn mark(&self) -> usize {
        self.state().kept.as_ref().map_or(0, Vec::len)
    }

    /// The plain lines logged since `mark`, one per line.
    pub fn lines_since(&self, mark: usize) -> String {
        let st = self.state();
        let kept = st.kept.as_deref().unwrap_or_default();
        kept.get(mark..).unwrap_or_default().join("\n")
    }

    /// Clears the status line, so what is printed next starts on a clean line.
    pub fn clear_status(&self) {
        let mut st = self.state();
        self.clear_status_locked(&mut st);
    }

    fn clear_status_locked(&self, st: &mut State) {
        if st.status_shown.take().is_some() {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }

    fn draw_status(&self) {
        let Some((what, since)) = self.activity.get().and_then(Activity::innermost) else {
            self.clear_status();
            return;
        };
        if since < STATUS_AFTER {
            return;
        }
        let mut line = format!("… {what} ({} s)", since.as_secs());
        let width = terminal_width().saturating_sub(1).max(20);
        if line.chars().count() > width {
            line = line.chars().take(width - 1).collect::<String>() + "…";
        }
        let mut st = self.state();
        if st.status_shown.as_ref() != Some(&line) {
            let _ = write!(std::io::stderr(), "\r\x1b[2K\x1b[2m{line}\x1b[0m");
            st.status_shown = Some(line);
        }
    }

    fn write_record(&self, record: &log::Record) {
        let secs = self.t0.elapsed().as_secs_f64();
        let depth = self.activity.get().map_or(0, Activity::depth);
        let indent = "  ".repeat(depth);
        let message = record.args().to_string();
        let plain = format!("[{secs:8.3}s] {indent}{message}");
        let mut st = self.state();
        self.clear_status_locked(&mut st);
        let shown = if self.colour {
            format!(
                "\x1b[2m[{secs:8.3}s]\x1b[0m {indent}{}",
                paint(record, &message)
            )
        } else {
            plain.clone()
        };
        let _ = writeln!(std::io::stderr(), "{shown}");
        if let Some(f) = st.file.as_mut() {
            let _ = writeln!(f, "{plain}");
        }
        if record.target() == CONSOLE {
            if let Some((name, line)) = message.split_once("# ") {
                st.console_line(name, line);
            }
        }
        if let Some(kept) = st.kept.as_mut() {
            kept.push(plain);
        }
    }
}

impl State {
    fn console_line(&mut self, name: &str, line: &str) {
        let Some(dir) = &self.console_dir else { return };
        if !self.consoles.contains_key(name) {
            match File::create(dir.join(format!("{name}.console.log"))) {
                Ok(f) => {
                    self.consoles.insert(name.to_string(), LineWriter::new(f));
                }
                Err(_) => return,
            }
        }
        if let Some(f) = self.consoles.get_mut(name) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The message with ANSI colours: console lines by machine, errors red, subtests bold.
fn paint(record: &log::Record, message: &str) -> String {
    if record.target() == CONSOLE {
        if let Some((name, line)) = message.split_once("# ") {
            return format!("\x1b[{}m{name}#\x1b[0m {line}", machine_colour(name));
        }
    }
    match record.level() {
        log::Level::Error => format!("\x1b[1;31m{message}\x1b[0m"),
        log::Level::Warn => format!("\x1b[33m{message}\x1b[0m"),
        _ if record.target() == STEP_END => format!("\x1b[2m{message}\x1b[0m"),
        _ if message.starts_with("subtest: ") => format!("\x1b[1m{message}\x1b[0m"),
        _ => message.to_string(),
    }
}

/// One of six colours, the same for a machine's name on every run.
fn machine_colour(name: &str) -> u8 {
    let h = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    31 + (h % 6) as u8
}

fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given; stderr outlives the call.
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

impl log::Log for Output {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.write_record(record);
        }
    }

    fn flush(&self) {
        let mut st = self.state();
        if let Some(f) = st.file.as_mut() {
            let _ = f.flush();
        }
        for f in st.consoles.values_mut() {
            let _ = f.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_keeps_its_colour_and_colours_vary() {
        assert_eq!(machine_colour("server"), machine_colour("server"));
        let colours: std::collections::HashSet<u8> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|n| machine_colour(n))
            .collect();
        assert!(colours.len() > 1);
        assert!(colours.iter().all(|c| (31..=36).contains(c)));
    }
}
