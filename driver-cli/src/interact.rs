//! `shell_interact()` / `console_interact()`: a line loop typed into one machine, its backdoor root
//! shell or its serial console; the same for lines from a socat address (`shell_interact(address)`);
//! and the line editor the REPL uses too.

use anyhow::Context;
use driver::{Driver, Machine};
use rustyline::error::ReadlineError;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// What a line typed in [`interact`] goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The backdoor root shell: each line runs as a command, its output and status printed.
    Shell,
    /// The serial console: each line is typed into it; what the guest prints shows in the log.
    Console,
}

/// How a user leaves [`interact`]; printed when it starts.
pub const LEAVE: &str = "Ctrl-D (end of input) leaves and returns to the REPL";

/// `shell_interact()` / `console_interact()`: a line loop on `machine` until end of input (Ctrl-D).
/// Ctrl-C abandons the line being typed; a command that hangs is stopped by Ctrl-C like any step.
pub fn interact(driver: &Driver, machine: &Machine, target: Target) -> anyhow::Result<()> {
    let name = machine.name().to_string();
    let (prompt, what) = match target {
        Target::Shell => (format!("{name}# "), "root shell (backdoor)"),
        Target::Console => (format!("{name} console> "), "serial console"),
    };
    println!("{what} of {name}; {LEAVE}.");
    let mut lines: Vec<String> = Vec::new();
    loop {
        let line = match editor(&lines)?.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if !line.trim().is_empty() {
            lines.push(line.clone());
        }
        match target {
            Target::Shell if line.trim().is_empty() => {}
            Target::Shell => match machine.execute(&line) {
                Ok((status, out)) => {
                    print!("{out}");
                    if !out.is_empty() && !out.ends_with('\n') {
                        println!();
                    }
                    if status != 0 {
                        println!("(exit status {status})");
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            },
            Target::Console => {
                if let Err(e) = machine.send_console(&format!("{line}\n")) {
                    eprintln!("error: {e}");
                }
                // Let the guest answer before the next prompt: its console lines go to the log.
                let _ = driver.sleep(std::time::Duration::from_millis(500));
            }
        }
    }
    println!("(left the {what} of {name})");
    Ok(())
}

/// A line editor whose history holds `lines`.
pub fn editor(lines: &[String]) -> rustyline::Result<rustyline::DefaultEditor> {
    let mut editor = rustyline::DefaultEditor::new()?;
    for line in lines {
        editor.add_history_entry(line.as_str())?;
    }
    Ok(editor)
}

/// How often [`interact_via_socat`] serves the machines while no line comes.
const SERVE_EVERY: Duration = Duration::from_millis(50);

/// NixOS's `shell_interact(address)`: socat connects `address` (`TCP-LISTEN:4444`, say) to us;
/// each line it passes runs in `machine`'s backdoor root shell and the command's output goes back,
/// until the other side closes. The machines are served while no line comes; Ctrl-C or the
/// global timeout end it (socat is stopped then, as at the end).
pub fn interact_via_socat(driver: &Driver, machine: &Machine, address: &str) -> anyhow::Result<()> {
    let name = machine.name();
    let mut socat = Command::new("socat")
        .args([address, "STDIO"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("shell_interact: cannot run socat for {address:?}"))?;
    log::info!("{name}: root shell (backdoor) at socat address {address}, until it closes");
    let (Some(mut to_socat), Some(from_socat)) = (socat.stdin.take(), socat.stdout.take()) else {
        unreachable!("both pipes were asked for");
    };
    // A thread reads, so that the machines are served while nobody types.
    let (lines, typed) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(from_socat).lines() {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let served = loop {
        let line = match typed.recv_timeout(SERVE_EVERY) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => break Err(anyhow::Error::from(e).context("reading from socat")),
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
            Err(RecvTimeoutError::Timeout) => match driver.sleep(Duration::ZERO) {
                Ok(()) => continue,
                Err(e) => break Err(e.into()),
            },
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match machine.execute(&line) {
            Ok((_, out)) => out,
            Err(e) => format!("error: {e}\n"),
        };
        // The other side may be gone already; its end of input ends the loop.
        let _ = to_socat.write_all(reply.as_bytes());
    };
    drop(to_socat);
    // Ours, by PID: gone already when the other side closed, else stopped here.
    let _ = socat.kill();
    let status = socat.wait().context("shell_interact: waiting for socat")?;
    let _ = reader.join();
    log::info!("{name}: left the socat session");
    served?;
    // Killed above only once the loop had ended: a status of its own is socat's failure (an
    // address it cannot use, say; its message is on stderr).
    match status.code() {
        Some(code) if code != 0 => {
            anyhow::bail!("shell_interact: socat {address:?} failed (exit status {code})")
        }
        _ => Ok(()),
    }
}
