//! The crates' shape, checked from their sources: no import circle between files, no file of
//! `driver` importing from a layer above its own (the layers are the ones `driver`'s crate doc
//! draws), no module of `driver-cli` importing from its `main.rs`, and no file of `driver/src`
//! over 700 lines. A new file must be given its layer here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `driver`'s layers, bottom first: a file may import from its own layer or the ones before it.
const LAYERS: &[&[&str]] = &[
    &[
        "activity", "console", "error", "ext", "record", "settings", "text",
    ],
    &["event_loop"],
    &["cache", "vlan"],
    &["core"],
    &["machine"],
    &["boot"],
    &["commands", "monitor"],
    &[
        "cache_save",
        "context",
        "coverage",
        "files",
        "keys",
        "network",
        "nics",
        "ocr",
        "parity",
        "polling",
        "qmp",
        "screen",
        "snapshot",
        "systemd",
        "tty",
        "waits",
        "x11",
    ],
    &["power", "together"],
    &["driver"],
];

/// Most lines a file of `driver/src` may have.
const MAX_LINES: usize = 700;

/// An import arrow between two files, by module path.
type Arrows = BTreeSet<(String, String)>;

/// A crate's files: module path (`event_loop::channels`) to its text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{stem}::"), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = match stem.as_str() {
                    "mod" => prefix.trim_end_matches("::").to_string(),
                    _ => format!("{prefix}{stem}"),
                };
                out.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, "", &mut out);
    out
}

/// The code of `text` without comments (doc examples name the crate too) and its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The paths `text` names from the crate root (`crate::a::b`; `super::x` resolved from `module`),
/// each as its segments; a group (`crate::{a, b::c}`) gives one path per member.
fn paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let parent: Vec<String> = module.split("::").map(str::to_string).collect();
    let mut rest = text;
    while let Some(at) = rest
        .find("crate::")
        .into_iter()
        .chain(rest.find("super::"))
        .min()
    {
        let before = rest[..at].chars().last();
        rest = &rest[at..];
        let mut segments = Vec::new();
        if let Some(t) = rest.strip_prefix("crate::") {
            rest = t;
        } else {
            segments = parent.clone();
            while let Some(t) = rest.strip_prefix("super::") {
                segments.pop();
                rest = t;
            }
        }
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut tail = rest;
        loop {
            if let Some(group) = tail.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for member in group[..end].split(',') {
                    let mut path = segments.clone();
                    path.extend(member.trim().split("::").map(ident));
                    found.push(path);
                }
                break;
            }
            let word = ident(tail);
            if word.is_empty() {
                found.push(segments);
                break;
            }
            segments.push(word.clone());
            tail = &tail[word.len()..];
            match tail.strip_prefix("::") {
                Some(t) => tail = t,
                None => {
                    found.push(segments);
                    break;
                }
            }
        }
    }
    found
}

/// The crate root's `pub use module::{Name, …}` lines, as name to module (`""`: another crate's).
fn reexports(root: &str, known: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in root.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let (module, names) = match rest.split_once("::{") {
            Some((m, names)) => (m, names.trim_end_matches('}').to_string()),
            None => match rest.rsplit_once("::") {
                Some((m, name)) => (m, name.to_string()),
                None => continue,
            },
        };
        // A name from another crate leads to no file of this one.
        let module = match known.contains(module) {
            true => module,
            false => "",
        };
        for name in names.split(',') {
            let name = name.split(" as ").last().unwrap().trim();
            map.insert(name.to_string(), module.to_string());
        }
    }
    map
}

/// Every import arrow between the crate's files; one to `root` for a name the root defines.
fn arrows(src: &Path, root: &str) -> Arrows {
    let files = modules(src);
    let known: BTreeSet<String> = files.keys().filter(|m| *m != root).cloned().collect();
    let reexports = reexports(files.get(root).map_or("", String::as_str), &known);
    let mut arrows = BTreeSet::new();
    for (module, text) in files.iter().filter(|(m, _)| *m != root) {
        for path in paths(module, &code(text)) {
            let prefix = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|p| known.contains(p));
            let to = match prefix {
                Some(to) => to,
                None => match path.first().and_then(|name| reexports.get(name)) {
                    Some(to) => to.clone(),
                    None if path.len() == 1 => root.to_string(),
                    None => continue,
                },
            };
            if &to != module && !to.is_empty() {
                arrows.insert((module.clone(), to));
            }
        }
    }
    arrows
}

/// A circle among the arrows, if there is one, as the modules along it.
fn circle(arrows: &Arrows) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        arrows: &Arrows,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for (_, to) in arrows.iter().filter(|(from, _)| from == node) {
            if let Some(c) = visit(to, arrows, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    arrows
        .iter()
        .find_map(|(from, _)| visit(from, arrows, &mut Vec::new(), &mut done))
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap();
    LAYERS.iter().position(|l| l.contains(&top))
}

#[test]
fn driver_files_import_only_downwards_and_in_no_circle() {
    let arrows = arrows(&crate_src("driver"), "lib");
    assert!(arrows.len() > 50, "too few arrows found: {arrows:?}");
    if let Some(c) = circle(&arrows) {
        panic!("import circle in driver/src: {}", c.join(" -> "));
    }
    let mut upward = Vec::new();
    for (from, to) in &arrows {
        let (Some(a), Some(b)) = (layer(from), layer(to)) else {
            panic!("{from} -> {to}: give every file of driver/src its layer in LAYERS");
        };
        if b > a {
            upward.push(format!("{from} (layer {a}) -> {to} (layer {b})"));
        }
    }
    assert!(
        upward.is_empty(),
        "imports up the layers:\n{}",
        upward.join("\n")
    );
    // The loop's room knows channels, not features: beyond itself it imports only the leaves.
    for (from, to) in &arrows {
        if from.starts_with("event_loop") && !to.starts_with("event_loop") {
            assert_eq!(layer(to), Some(0), "the loop imports {to}");
        }
    }
}

#[test]
fn driver_cli_modules_import_in_no_circle_and_not_from_main() {
    let arrows = arrows(&crate_src("driver-cli"), "main");
    if let Some(c) = circle(&arrows) {
        panic!("import circle in driver-cli/src: {}", c.join(" -> "));
    }
    let from_main: Vec<_> = arrows.iter().filter(|(_, to)| to == "main").collect();
    assert!(
        from_main.is_empty(),
        "modules importing from main.rs: {from_main:?}"
    );
}

#[test]
fn no_driver_file_is_over_the_limit() {
    let long: Vec<String> = modules(&crate_src("driver"))
        .iter()
        .map(|(m, text)| (m, text.lines().count()))
        .filter(|(_, n)| *n > MAX_LINES)
        .map(|(m, n)| format!("{m}: {n} lines"))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_checker_sees_arrows_circles_and_names_of_the_root() {
    let dir = std::env::temp_dir().join(format!("vmtd-layers-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("room")).unwrap();
    let write = |p: &str, t: &str| std::fs::write(src.join(p), t).unwrap();
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod room;\npub use a::Thing;\npub struct Root;\n",
    );
    write(
        "a.rs",
        "use crate::b::f;\n/// crate::room::ignored in a comment\npub struct Thing;\n",
    );
    write(
        "b.rs",
        "use crate::{Thing, room::inner::g};\npub fn f() {}\n",
    );
    write("room/mod.rs", "mod inner;\nuse crate::Root;\n");
    write("room/inner.rs", "use super::super::a;\npub fn g() {}\n");
    let found = arrows(&src, "lib");
    let pairs: Vec<(&str, &str)> = found
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("a", "b"),
            ("b", "a"),
            ("b", "room::inner"),
            ("room", "lib"),
            ("room::inner", "a")
        ]
    );
    assert_eq!(circle(&found).unwrap(), ["a", "b", "a"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
