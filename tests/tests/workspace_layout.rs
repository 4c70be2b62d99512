//! The workspace keeps its shape: no import circle between the modules of any crate.
//!
//! Each crate's `src/` is read as a tree of file modules. A module depends on another when its
//! code (comments and `#[cfg(test)]` blocks left out) names a path into it (`crate::a::b`,
//! `super::x`, `self::y`, also inside `use` groups). For every module, its children (each with
//! everything below it) must not depend on each other in a circle: a circle means neither can
//! be understood, tested or moved without the other.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module: its path from the crate root (`[]` is the root).
type Module = Vec<String>;

/// The file modules of `src` and their source, comments and test blocks removed.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("reading a source directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("below src");
            let mut parts: Module = rel
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let text = fs::read_to_string(&path).expect("reading a source file");
            out.insert(parts, strip(&text));
        }
    }
    out
}

/// The source without comments and without `#[cfg(test)] mod … { … }` blocks.
fn strip(text: &str) -> String {
    let mut code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    while let Some(start) = code.find("#[cfg(test)]") {
        let after = &code[start..];
        let Some(open) = after.find('{') else { break };
        if let Some(semi) = after[..open].find(';') {
            // A test-only declaration without a body (`mod tests;`, `use …;`): drop it.
            code.replace_range(start..start + semi + 1, "");
            continue;
        }
        let is_mod = after[..open].contains("mod ");
        if !is_mod {
            // A test-only item that is not a module: drop just the attribute.
            code.replace_range(start..start + "#[cfg(test)]".len(), "");
            continue;
        }
        let mut depth = 0usize;
        let mut end = start + open;
        for (i, c) in code[start + open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code.replace_range(start..end, "");
    }
    code
}

/// Every path a piece of code names with `crate::`, `super::` or `self::`, as segments
/// relative to `module` (groups `a::{b, c::d}` expanded one level).
fn named_paths(module: &Module, code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for base in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(base) {
            let at = from + found;
            from = at + base.len();
            let word_before = at > 0
                && (bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            if word_before || !code[from..].starts_with("::") {
                continue;
            }
            let mut prefix: Module = match base {
                "crate" => Vec::new(),
                "self" => module.clone(),
                _ => module[..module.len().saturating_sub(1)].to_vec(),
            };
            let rest = &code[from..];
            let mut segs: Vec<String> = Vec::new();
            let mut i = 0;
            let mut group = None;
            while rest[i..].starts_with("::") {
                i += 2;
                if rest[i..].starts_with('{') {
                    let close = rest[i..].find('}').map_or(rest.len(), |c| i + c);
                    group = Some(rest[i + 1..close].to_owned());
                    break;
                }
                let len = rest[i..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - i);
                if len == 0 {
                    break;
                }
                segs.push(rest[i..i + len].to_owned());
                i += len;
            }
            while segs.first().map(String::as_str) == Some("super") {
                segs.remove(0);
                prefix.pop();
            }
            let mut path = prefix.clone();
            path.extend(segs.iter().cloned());
            out.push(path.clone());
            for item in group.iter().flat_map(|g| g.split(',')) {
                let item = item.split(" as ").next().unwrap_or_default();
                let mut p = path.clone();
                p.extend(
                    item.split("::")
                        .map(|s| s.trim().trim_matches(|c| c == '{' || c == '}').to_owned())
                        .filter(|s| !s.is_empty()),
                );
                out.push(p);
            }
        }
    }
    out
}

/// The deepest module `path` falls in.
fn resolve(modules: &BTreeMap<Module, String>, path: &Module) -> Option<Module> {
    (0..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| modules.contains_key(m))
}

/// The circles among the children of each module of `src`, named.
fn circles(src: &Path) -> Vec<String> {
    let modules = modules(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, code) in &modules {
        for p in named_paths(m, code) {
            if let Some(target) = resolve(&modules, &p) {
                if &target != m {
                    edges.entry(m.clone()).or_default().insert(target);
                }
            }
        }
    }
    let mut found = Vec::new();
    for parent in modules.keys() {
        let child = |m: &Module| -> Option<Module> {
            (m.len() > parent.len() && m.starts_with(parent)).then(|| m[..=parent.len()].to_vec())
        };
        let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (a, targets) in &edges {
            let Some(ca) = child(a) else { continue };
            for b in targets {
                if let Some(cb) = child(b) {
                    if ca != cb {
                        graph.entry(ca.clone()).or_default().insert(cb);
                    }
                }
            }
        }
        for cycle in strongly_connected(&graph) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            found.push(format!("{} ({})", names.join(" <-> "), src.display()));
        }
    }
    found
}

/// Strongly connected components of more than one node (Tarjan).
fn strongly_connected(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g Module) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut all = Vec::new();
    for krate in [
        "config",
        "manifest",
        "transport",
        "origin",
        "node",
        "clock",
        "membership",
        "tests",
    ] {
        let src = workspace().join(krate).join("src");
        if src.is_dir() {
            all.extend(circles(&src));
        }
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    fs::create_dir_all(src.join("a")).expect("mkdir");
    fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").expect("write");
    fs::write(src.join("a/mod.rs"), "mod x;\nmod y;\nuse crate::b::B;\n").expect("write");
    // a::x and a::y need each other; a needs b and b needs a's child (so a <-> b too).
    fs::write(
        src.join("a/x.rs"),
        "use super::y::Y; // a comment naming crate::z\n",
    )
    .expect("write");
    fs::write(
        src.join("a/y.rs"),
        "use super::{x::X, self};\n#[cfg(test)]\nmod tests { use crate::b; }\n",
    )
    .expect("write");
    fs::write(src.join("b.rs"), "use crate::a::{x::X};\n").expect("write");
    let found = circles(src);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|c| c.starts_with("a <-> b")), "{found:?}");
    assert!(
        found.iter().any(|c| c.starts_with("a::x <-> a::y")),
        "{found:?}"
    );
    // Without the back edge from b, only the circle inside a remains.
    fs::write(src.join("b.rs"), "pub struct B;\n").expect("write");
    let found = circles(src);
    assert_eq!(found.len(), 1, "{found:?}");
}
