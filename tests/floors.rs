//! The house's floors: every part of `src/` imports only from parts below it, in the
//! order `FLOORS` gives (bottom first), and the parts of `loadgen/src/` import each other
//! in no circle. Read from the source files themselves (`crate::part` paths outside
//! comments), so a new arrow up the stack fails here, naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts of `src/`, bottom first. A part may import from the parts before it.
const FLOORS: &[&str] = &[
    // Leaves: time, the refusal every answer shares, the metrics recorder, supervision,
    // the log's format.
    "clock",
    "refusal",
    "metrics",
    "tasks",
    "logging",
    // The pure stock machine, then what configures it, stores it, and runs it.
    "core",
    "config",
    "store",
    "engine",
    // The channels' adapters, then what moves stock to and from them, then the edge.
    "channels",
    "propagate",
    "ingest",
    // The commands and the demo; a command's requests to the running server first.
    "remote",
    "onboarding",
    "cli",
    "demo",
    "walk",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part a file of `root` belongs to: its first path component, without `.rs`.
fn part_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The parts a file names as `crate::part`, comments left out.
fn imports(file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut parts = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                parts.insert(name);
            }
            rest = after;
        }
    }
    parts
}

/// Every part's imports of other parts, with the files that make them.
fn graph(root: &Path) -> BTreeMap<String, BTreeMap<String, Vec<PathBuf>>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<PathBuf>>> = BTreeMap::new();
    for file in files {
        let part = part_of(root, &file);
        let edges = graph.entry(part.clone()).or_default();
        for other in imports(&file) {
            if other != part {
                edges.entry(other).or_default().push(file.clone());
            }
        }
    }
    graph
}

#[test]
fn every_part_of_src_imports_only_from_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let floor = |part: &str| FLOORS.iter().position(|p| *p == part);
    let mut upward = Vec::new();
    for (part, edges) in graph(&root) {
        if part == "lib" || part == "main" {
            continue;
        }
        let Some(at) = floor(&part) else {
            panic!("src/{part} is on no floor: add it to FLOORS where it belongs");
        };
        for (other, files) in edges {
            match floor(&other) {
                Some(below) if below < at => {}
                _ => upward.push(format!("{part} imports {other} ({files:?})")),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports up the stack:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_parts_of_loadgen_import_each_other_in_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadgen/src");
    let graph = graph(&root);
    // Depth-first, by colour: a part met again while still open closes a circle.
    fn visit(
        part: &str,
        graph: &BTreeMap<String, BTreeMap<String, Vec<PathBuf>>>,
        open: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = open.iter().position(|p| p == part) {
            let mut circle = open[at..].to_vec();
            circle.push(part.to_string());
            return Some(circle);
        }
        if !done.insert(part.to_string()) {
            return None;
        }
        open.push(part.to_string());
        for other in graph.get(part).into_iter().flat_map(|e| e.keys()) {
            if let Some(circle) = visit(other, graph, open, done) {
                return Some(circle);
            }
        }
        open.pop();
        None
    }
    let mut done = BTreeSet::new();
    for part in graph.keys() {
        if let Some(circle) = visit(part, &graph, &mut Vec::new(), &mut done) {
            panic!("loadgen imports in a circle: {}", circle.join(" -> "));
        }
    }
}
