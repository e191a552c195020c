//! The broker's top-level modules import each other in one cycle only: `shard` <-> `conn`
//! and `bridge` (a shard owns its connections, a bridge being a client connection of its
//! own, and a connection's task works on its shard). Every other module
//! sits below that pair or above it, so a subsystem can be read, tested and replaced on its
//! own. This test reads the sources (every `crate::` path outside comments) and fails naming
//! any other cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The only strongly connected set of modules allowed.
const ALLOWED: [&str; 3] = ["bridge", "conn", "shard"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`shard` for `src/shard/run.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Edges `module -> module it names` over the crate.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&name) && name != from {
                    graph.entry(from.clone()).or_default().insert(name);
                }
            }
        }
    }
    graph
}

/// Every module reachable from `start`.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![start.to_string()];
    while let Some(m) = stack.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn the_only_import_cycle_is_shard_and_conn() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = edges(&src);
    let mut cycles = BTreeSet::new();
    for m in graph.keys() {
        let from_m = reachable(&graph, m);
        let scc: BTreeSet<String> = from_m
            .iter()
            .filter(|n| reachable(&graph, n).contains(m))
            .cloned()
            .collect();
        if !scc.is_empty() {
            cycles.insert(scc.into_iter().collect::<Vec<_>>());
        }
    }
    let allowed: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    let others: Vec<_> = cycles.iter().filter(|c| **c != allowed).collect();
    assert!(
        others.is_empty(),
        "import cycles besides shard <-> conn, bridge: {others:?}\nedges: {graph:#?}"
    );
}
