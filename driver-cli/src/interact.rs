//! `shell_interact()` / `console_interact()`: a line loop typed into one machine, its backdoor root
//! shell or its serial console; and the line editor the REPL uses too.

use driver::{Driver, Machine};
use rustyline::error::ReadlineError;

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
