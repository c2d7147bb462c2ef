//! `--interactive`: a REPL with the test script's bindings, line editing and history, for Rhai
//! ([`run`]) and, through [`session`], for Python (`python::repl`). Machines start when first
//! used; Ctrl-C interrupts the step in progress and returns to the prompt.

use crate::interact::editor;
use crate::output::Output;
use crate::script_error::located;
use driver::Driver;
use rhai::{Dynamic, Engine, ParseErrorType, Scope, AST};
use rustyline::error::ReadlineError;
use signal_hook::consts::{SIGHUP, SIGTERM};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Inputs kept in the history file.
const HISTORY_LINES: usize = 500;
/// Typed alone, runs the test script given on the command line.
const TEST_SCRIPT: &str = "test_script()";

/// A REPL's prompts and where its history is kept.
pub struct Language {
    /// The prompt for new input.
    pub prompt: &'static str,
    /// The prompt while input reads on.
    pub more: &'static str,
    /// The history file's name, in the state directory.
    pub history: &'static str,
}

/// Rhai's REPL.
const RHAI: Language = Language {
    prompt: "vmtd> ",
    more: "  ... ",
    history: "history",
};

/// What the language made of the input read so far.
pub enum Entered {
    /// It stops before its end (an open block): read on.
    More,
    /// It ran; its result or error is printed.
    Ran,
    /// It asked to leave the REPL.
    Leave,
}

/// Reads, evaluates and prints until end of input (Ctrl-D).
pub fn run(
    engine: &Engine,
    scope: &mut Scope,
    driver: &Driver,
    test_script: Option<&AST>,
    out: &Output,
) -> anyhow::Result<()> {
    session(driver, out, &RHAI, |input| {
        let text = input.trim();
        let result = if text.trim_end_matches(';') == TEST_SCRIPT {
            match test_script {
                Some(ast) => engine.eval_ast_with_scope::<Dynamic>(scope, ast),
                None => Err("no test script was given on the command line".into()),
            }
        } else {
            match engine.compile_with_scope(scope, text) {
                Ok(ast) => engine.eval_ast_with_scope::<Dynamic>(scope, &ast),
                // An open block or string: read on.
                Err(e) if incomplete(&e.0) => return Entered::More,
                Err(e) => Err(e.into()),
            }
        };
        out.clear_status();
        match result {
            Ok(v) if v.is_unit() => {}
            Ok(v) => println!("{v:?}"),
            Err(e) => eprintln!("error: {}", located("<repl>".as_ref(), &e)),
        }
        Entered::Ran
    })
}

/// The REPL's loop over `eval`, which gets the input read so far (lines joined by `\n`) and runs
/// it when it is whole: the prompts, line editing, history, and what signals do.
pub fn session(
    driver: &Driver,
    out: &Output,
    language: &Language,
    mut eval: impl FnMut(&str) -> Entered,
) -> anyhow::Result<()> {
    // At the prompt nothing is in progress, so SIGTERM and SIGHUP (the terminal closed) end the
    // process at once, QEMU and the switches following it by PDEATHSIG; during a step they
    // interrupt it like Ctrl-C, and the session ends after it.
    let at_prompt = Arc::new(AtomicBool::new(false));
    for (sig, code) in [(SIGTERM, 128 + SIGTERM), (SIGHUP, 128 + SIGHUP)] {
        signal_hook::flag::register_conditional_shutdown(sig, code, at_prompt.clone())?;
    }
    let history = history_file(language.history);
    let mut lines: Vec<String> = Vec::new();
    if let Some(h) = &history {
        let mut editor = editor(&[])?;
        if editor.load_history(h).is_ok() {
            lines.extend(editor.history().iter().cloned());
        }
    }
    let names: Vec<String> = driver
        .machines()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    println!(
        "machines: {} (not started; any command starts its machine, or start_all()).",
        names.join(", ")
    );
    println!("Ctrl-C interrupts a step, Ctrl-D leaves and stops the machines.");
    let mut buffer: Vec<String> = Vec::new();
    loop {
        out.clear_status();
        let prompt = if buffer.is_empty() {
            language.prompt
        } else {
            language.more
        };
        at_prompt.store(true, Ordering::SeqCst);
        // An editor per line: rustyline takes SIGINT over for its editor's lifetime, and Ctrl-C
        // during a step must reach the driver.
        let read = editor(&lines)?.readline(prompt);
        at_prompt.store(false, Ordering::SeqCst);
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        buffer.push(line);
        let input = buffer.join("\n");
        let text = input.trim();
        if text.is_empty() {
            buffer.clear();
            continue;
        }
        if lines.last().map(String::as_str) != Some(text) {
            lines.push(text.to_string());
            let over = lines.len().saturating_sub(HISTORY_LINES);
            lines.drain(..over);
        }
        let entered = eval(&input);
        if matches!(entered, Entered::More) {
            continue;
        }
        buffer.clear();
        out.clear_status();
        let signal = driver.take_signal();
        if matches!(entered, Entered::Leave) {
            break;
        }
        match signal {
            Some(sig) if sig == SIGTERM || sig == SIGHUP => break,
            Some(_) => eprintln!("(interrupted; the machines keep running)"),
            None => {}
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor(&lines)?.save_history(h);
    }
    Ok(())
}

/// Whether a parse error means the input stops before its end (more lines will complete it).
fn incomplete(e: &ParseErrorType) -> bool {
    match e {
        ParseErrorType::UnexpectedEOF => true,
        ParseErrorType::MissingToken(token, _) => matches!(token.as_str(), "}" | ")" | "]"),
        ParseErrorType::UnknownOperator(op) => op.starts_with('"') || op.starts_with('`'),
        _ => false,
    }
}

/// `$XDG_STATE_HOME/vm-test-driver/<name>`, else `~/.local/state/vm-test-driver/<name>`.
fn history_file(name: &str) -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local/state"),
    };
    Some(base.join("vm-test-driver").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(src: &str) -> ParseErrorType {
        *Engine::new().compile(src).unwrap_err().0
    }

    #[test]
    fn open_blocks_read_on_and_real_errors_do_not() {
        assert!(incomplete(&parse_error("subtest(\"x\", || {")));
        assert!(incomplete(&parse_error("let a = [1,")));
        assert!(incomplete(&parse_error("foo(1,")));
        assert!(!incomplete(&parse_error("let = 3;")));
        assert!(!incomplete(&parse_error("1 +* 2")));
    }
}
