//! The coverage report: every machine's gcov data (collected into `<output dir>/coverage/<machine>/`,
//! guest paths kept) turned into one lcov tracefile per machine, merged, and rendered as HTML with
//! Debian's `lcov` and `genhtml`, called as processes.

use anyhow::{bail, Context};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the merged report says, in one line.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Lines run at least once, on any machine.
    pub lines_hit: u64,
    /// Instrumented lines.
    pub lines_total: u64,
    /// The machines whose data went in.
    pub machines: Vec<String>,
    /// The merged tracefile.
    pub tracefile: PathBuf,
    /// The HTML report's index.
    pub html: PathBuf,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = 100.0 * self.lines_hit as f64 / (self.lines_total.max(1)) as f64;
        write!(
            f,
            "{} of {} lines hit ({pct:.1} %) on {}; {}",
            self.lines_hit,
            self.lines_total,
            self.machines.join(", "),
            self.html.display()
        )
    }
}

/// Builds the merged report from `<output_dir>/coverage/`.
pub fn report(output_dir: &Path) -> anyhow::Result<Summary> {
    let root = output_dir.join(driver::COVERAGE_DIR);
    if !root.is_dir() {
        bail!(
            "no coverage data: {} does not exist (name guest directories with add_coverage_dir)",
            root.display()
        );
    }
    let mut machines = Vec::new();
    let mut tracefiles = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "html"))
        .collect();
    entries.sort();
    for dir in entries {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let gcda = files_with_extension(&dir, "gcda");
        if gcda.is_empty() {
            log::warn!("coverage: no .gcda files from machine {name}");
            continue;
        }
        for data in &gcda {
            place_notes(&dir, data)?;
        }
        // No test name: records of one file from several machines then merge into one.
        let tracefile = root.join(format!("{name}.info"));
        lcov(
            "lcov",
            &[
                "--quiet".as_ref(),
                "--capture".as_ref(),
                "--directory".as_ref(),
                dir.as_os_str(),
                "--output-file".as_ref(),
                tracefile.as_os_str(),
            ],
        )?;
        machines.push(name);
        tracefiles.push(tracefile);
    }
    if tracefiles.is_empty() {
        bail!(
            "no coverage data: no machine's folder under {} holds .gcda files",
            root.display()
        );
    }
    let total = root.join("total.info");
    let mut args: Vec<&std::ffi::OsStr> = vec!["--quiet".as_ref()];
    for t in &tracefiles {
        args.extend(["--add-tracefile".as_ref(), t.as_os_str()]);
    }
    args.extend(["--output-file".as_ref(), total.as_os_str()]);
    lcov("lcov", &args)?;
    let html = root.join("html");
    lcov(
        "genhtml",
        &[
            "--quiet".as_ref(),
            "--output-directory".as_ref(),
            html.as_os_str(),
            total.as_os_str(),
        ],
    )?;
    let (lines_hit, lines_total) = line_counts(
        &std::fs::read_to_string(&total)
            .with_context(|| format!("cannot read {}", total.display()))?,
    );
    Ok(Summary {
        lines_hit,
        lines_total,
        machines,
        tracefile: total,
        html: html.join("index.html"),
    })
}

/// Runs an lcov tool, naming the Debian package when it is missing and showing what it said when it
/// fails.
fn lcov(tool: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let out = match Command::new(tool).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{tool} is not installed (Debian package lcov)")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot run {tool}")),
    };
    if !out.status.success() {
        bail!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Puts the `.gcno` file that `data` (`<machine dir>/<guest path>.gcda`) belongs to beside it. The
/// guest path is the build directory's path under some `GCOV_PREFIX`: the notes file is the host
/// file at the longest tail of that path that exists.
fn place_notes(machine_dir: &Path, data: &Path) -> anyhow::Result<()> {
    let notes_here = data.with_extension("gcno");
    let guest = data
        .strip_prefix(machine_dir)
        .unwrap_or(data)
        .with_extension("gcno");
    let parts: Vec<_> = guest.components().collect();
    for skip in 0..parts.len() {
        let host = Path::new("/").join(parts[skip..].iter().collect::<PathBuf>());
        if host.is_file() {
            std::fs::copy(&host, &notes_here)
                .with_context(|| format!("cannot copy {}", host.display()))?;
            return Ok(());
        }
    }
    bail!(
        "no .gcno file on this host for {} (build the program here, and keep its build directory)",
        data.display()
    )
}

fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if path.is_dir() {
            found.extend(files_with_extension(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Lines hit and lines instrumented in a tracefile (the sums of its `LH:` and `LF:` records).
pub fn line_counts(tracefile: &str) -> (u64, u64) {
    let sum = |key: &str| {
        tracefile
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            .sum()
    };
    (sum("LH:"), sum("LF:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_over_files() {
        let info = "TN:server\nSF:/a.c\nDA:1,1\nLF:10\nLH:4\nend_of_record\nSF:/b.c\nLF:5\nLH:5\nend_of_record\n";
        assert_eq!(line_counts(info), (9, 15));
    }

    #[test]
    fn notes_are_found_by_the_longest_existing_tail_of_the_guest_path() {
        let host = std::env::temp_dir().join(format!("vmtd-cov-{}", std::process::id()));
        let build = host.join("build");
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("x.gcno"), "notes").unwrap();
        let machine = host.join("coverage/server");
        // As the guest wrote it: GCOV_PREFIX=/tmp/gcov, then the build directory's path.
        let data_dir = machine
            .join("tmp/gcov")
            .join(build.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&data_dir).unwrap();
        let data = data_dir.join("x.gcda");
        std::fs::write(&data, "data").unwrap();
        place_notes(&machine, &data).unwrap();
        assert_eq!(
            std::fs::read_to_string(data_dir.join("x.gcno")).unwrap(),
            "notes"
        );
        let stray = machine.join("elsewhere/y.gcda");
        std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
        std::fs::write(&stray, "data").unwrap();
        let err = place_notes(&machine, &stray).unwrap_err().to_string();
        assert!(err.contains("no .gcno file on this host"), "{err}");
        std::fs::remove_dir_all(&host).unwrap();
    }
}
