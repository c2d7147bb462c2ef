//! The run report: `report.json` (schema: `driver-cli/report.schema.json`) and `index.html`, which
//! renders the same content for a person: self-contained (inline CSS, screenshots as data URIs, no
//! script, nothing fetched), so a CI artifact is readable on its own.
//!
//! `data` holds what both files show, `html` the page, built with maud so that every string from
//! the run (commands, their output, console lines, names) is escaped by the template engine;
//! `waits` folds the commands a wait polled with into one entry of the page's command lists.

mod data;
#[cfg(test)]
mod fixture;
mod html;
mod waits;

pub use data::{Report, TestResult, SCHEMA_VERSION};
use std::path::Path;

/// Writes `dir/report.json` and `dir/index.html`.
pub fn write(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("index.html"), html::page(report))?;
    Ok(())
}
