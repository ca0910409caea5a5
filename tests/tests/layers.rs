//! The direction of vminitd's imports, read from its sources: each layer
//! imports only from the layers below it, and no two files import each
//! other, directly or round a longer cycle. The same cycle check holds
//! `host-shim/src/network/`.
//!
//! ```text
//! rpc                    the agent: accept loop, sessions, access, errors on the wire
//! guest  |  container    PID 1's boot and end  |  the OCI container engine (siblings)
//! process                the agent's processes: table, start, stdio, reaper
//! child                  between fork and exec: spawn, root, namespaces, setup, security
//! sys                    descriptors, /proc, terminals, rtnetlink, the boot clock, the log
//! ```
//!
//! An import is every path that starts with `crate::`, `super::` or
//! `self::` (or a child module's name) in a `use` declaration or in the
//! code, comments and strings left out. It points at the file of the
//! deepest module it names; a name a module re-exports (`pub use`) points
//! on to the file that defines it. `lib.rs` is exempt from the layers (it
//! ties them together), not from the cycles; `main.rs` is the binary, a
//! crate of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use vminitd_tests::workspace_root;

/// The layers of `init/src`, bottom first; `guest` and `container` share
/// a rank.
const LAYERS: [(&str, u8); 6] = [
    ("sys", 0),
    ("child", 1),
    ("process", 2),
    ("guest", 3),
    ("container", 3),
    ("rpc", 4),
];

/// Imports between the two layers of one rank, allowed one way, with the
/// reason. `guest` (PID 1's boot) and `container` (the engine) import
/// nothing of each other: what the boot decides for containers (the root
/// filesystem's status, the workloads' cgroup) goes down to `process` and
/// `child`, where both read it. None is needed.
const SIBLING_IMPORTS: [(&str, &str, &str); 0] = [];

/// A module: its path in the crate, and the file it is in.
#[derive(Debug, Clone)]
struct Module {
    path: Vec<String>,
    file: PathBuf,
}

/// One import: the file it is in, the path as written, the file it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    from: PathBuf,
    path: String,
    to: PathBuf,
}

/// A crate's sources, as modules and their imports.
struct Crate {
    root: PathBuf,
    modules: BTreeMap<Vec<String>, PathBuf>,
    /// Per module: the names it re-exports, and the path each names.
    reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
    imports: Vec<Import>,
}

impl Crate {
    /// Every `.rs` file under `src` (the crate root `lib.rs`), but those
    /// of other crates (`main.rs`, `bin/`).
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let sources: Vec<(Module, String)> = files
            .into_iter()
            .filter(|f| {
                let rel = f.strip_prefix(src).unwrap();
                rel != Path::new("main.rs") && !rel.starts_with("bin")
            })
            .map(|file| {
                let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                (
                    Module {
                        path: module_path(src, &file),
                        file,
                    },
                    text,
                )
            })
            .collect();
        Crate::from_sources(src, sources)
    }

    fn from_sources(root: &Path, sources: Vec<(Module, String)>) -> Crate {
        let modules = sources.iter().map(|(m, _)| (m.path.clone(), m.file.clone())).collect();
        let mut krate = Crate {
            root: root.to_owned(),
            modules,
            reexports: BTreeMap::new(),
            imports: Vec::new(),
        };
        let scanned: Vec<(Module, Vec<Written>)> = sources
            .into_iter()
            .map(|(module, text)| {
                let written = scan(&strip(&text));
                (module, written)
            })
            .collect();
        for (module, written) in &scanned {
            for w in written.iter().filter(|w| w.reexport && w.inline.is_empty()) {
                if let (Some(name), Some(path)) = (w.name.clone(), krate.absolute(&module.path, &w.inline, &w.path)) {
                    krate
                        .reexports
                        .entry(module.path.clone())
                        .or_default()
                        .insert(name, path);
                }
            }
        }
        for (module, written) in &scanned {
            for w in written {
                let Some(path) = krate.absolute(&module.path, &w.inline, &w.path) else {
                    continue;
                };
                let to = krate.file_of(&path, 0);
                if to != module.file {
                    krate.imports.push(Import {
                        from: module.file.clone(),
                        path: w.path.join("::"),
                        to,
                    });
                }
            }
        }
        krate.imports.sort();
        krate.imports.dedup();
        krate
    }

    /// `path` as written in `module` (inside the inline modules `inline`)
    /// made absolute; `None` for a path outside the crate.
    fn absolute(&self, module: &[String], inline: &[String], path: &[String]) -> Option<Vec<String>> {
        let mut here: Vec<String> = module.iter().chain(inline).cloned().collect();
        let mut segments = path.iter().peekable();
        match segments.peek().map(|s| s.as_str()) {
            Some("crate" | "$crate") => {
                here.clear();
                segments.next();
            }
            Some("self") => {
                segments.next();
            }
            Some("super") => {
                while segments.peek().map(|s| s.as_str()) == Some("super") {
                    here.pop()?;
                    segments.next();
                }
            }
            Some(first) => {
                // A child module's name, relative to where it is written.
                let mut child = here.clone();
                child.push(first.to_owned());
                if !self.modules.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
        }
        here.extend(segments.cloned());
        Some(here)
    }

    /// The file that defines what `path` names: its deepest module's, or,
    /// where that module re-exports the name, the file it comes from.
    fn file_of(&self, path: &[String], depth: usize) -> PathBuf {
        let mut module = path.len();
        while module > 0 && !self.modules.contains_key(&path[..module]) {
            module -= 1;
        }
        if depth < 8 && module < path.len() {
            if let Some(target) = self.reexports.get(&path[..module]).and_then(|r| r.get(&path[module])) {
                let mut onward = target.clone();
                onward.extend(path[module + 1..].iter().cloned());
                return self.file_of(&onward, depth + 1);
            }
        }
        self.modules[&path[..module]].clone()
    }

    fn relative<'a>(&self, file: &'a Path) -> &'a Path {
        file.strip_prefix(&self.root).unwrap_or(file)
    }

    /// The layer of a file of `init/src`, by its first directory.
    fn layer(&self, file: &Path) -> Option<(&'static str, u8)> {
        let first = self.relative(file).components().next()?.as_os_str().to_str()?;
        let first = first.strip_suffix(".rs").unwrap_or(first);
        LAYERS.iter().copied().find(|(name, _)| *name == first)
    }

    /// Every import that points up the layers, or across to the sibling
    /// layer without an allowance; and every file outside the layers.
    fn upward_imports(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        for file in self.modules.values() {
            let rel = self.relative(file);
            if rel != Path::new("lib.rs") && self.layer(file).is_none() {
                wrong.push(format!(
                    "{} belongs to no layer (sys, child, process, guest, container, rpc)",
                    rel.display()
                ));
            }
        }
        for import in &self.imports {
            let (Some((from, from_rank)), Some((to, to_rank))) = (self.layer(&import.from), self.layer(&import.to))
            else {
                continue;
            };
            let allowed = SIBLING_IMPORTS.iter().any(|(a, b, _)| *a == from && *b == to);
            let upward = to_rank > from_rank || (to_rank == from_rank && from != to && !allowed);
            if upward {
                wrong.push(format!(
                    "{} ({from}) imports {} from {} ({to})",
                    self.relative(&import.from).display(),
                    import.path,
                    self.relative(&import.to).display()
                ));
            }
        }
        wrong
    }

    /// The import cycles among the files under `within`: each as its
    /// files and the imports that close it.
    fn cycles(&self, within: &Path) -> Vec<String> {
        let inside = |f: &Path| f.starts_with(within);
        let mut graph: BTreeMap<&Path, BTreeSet<&Path>> = BTreeMap::new();
        for file in self.modules.values().filter(|f| inside(f)) {
            graph.entry(file).or_default();
        }
        for import in self.imports.iter().filter(|i| inside(&i.from) && inside(&i.to)) {
            graph.entry(&import.from).or_default().insert(&import.to);
        }
        strongly_connected(&graph)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                // One shortest way round, from the component's first file.
                let hops = shortest_cycle(component[0], &graph, &component);
                let mut text = format!(
                    "{} files import each other in a cycle; one way round: {}",
                    component.len(),
                    self.relative(component[0]).display()
                );
                for (from, to) in hops {
                    let import = self
                        .imports
                        .iter()
                        .find(|i| i.from == from && i.to == to)
                        .map_or(String::new(), |i| i.path.clone());
                    text.push_str(&format!(" --{import}--> {}", self.relative(to).display()));
                }
                text
            })
            .collect()
    }
}

/// The hops of a shortest cycle from `start` back to it, within
/// `component`.
fn shortest_cycle<'a>(
    start: &'a Path,
    graph: &BTreeMap<&'a Path, BTreeSet<&'a Path>>,
    component: &[&'a Path],
) -> Vec<(&'a Path, &'a Path)> {
    let mut came_from: BTreeMap<&Path, &Path> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in graph.get(v).into_iter().flatten() {
            if !component.contains(&w) {
                continue;
            }
            if w == start {
                let mut hops = vec![(v, w)];
                let mut at = v;
                while at != start {
                    let from = came_from[at];
                    hops.push((from, at));
                    at = from;
                }
                hops.reverse();
                return hops;
            }
            if !came_from.contains_key(w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    Vec::new()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds: `a/b.rs` and `a/b/mod.rs` are `a::b`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

/// The code of a file, its comments, strings and character literals
/// blanked out (lines kept).
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, bytes: &[u8]| {
        for &c in bytes {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = raw_string(rest) {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let len = (j + 1).min(rest.len());
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest[0] == b'\'' {
            // A character literal ('a', '\n', '\u{1F600}'), not a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                rest.get(3..)
                    .and_then(|r| r.iter().position(|&c| c == b'\''))
                    .map(|p| p + 4)
            } else {
                let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(ch + 2)
            };
            match len {
                Some(len) => {
                    blank(&mut out, &rest[..len]);
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The length of a raw string literal (`r"..."`, `r#"..."#`, `br"..."`)
/// at the start of `rest`, if one is there.
fn raw_string(rest: &[u8]) -> Option<usize> {
    let start = if rest.starts_with(b"br") || rest.starts_with(b"cr") {
        2
    } else if rest.starts_with(b"r") {
        1
    } else {
        return None;
    };
    let hashes = rest[start..].iter().take_while(|&&c| c == b'#').count();
    if rest.get(start + hashes) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.resize(hashes + 1, b'#');
    let body = start + hashes + 1;
    let end = rest[body..].windows(close.len()).position(|w| w == close.as_slice())?;
    Some(body + end + close.len())
}

/// A path as written.
#[derive(Debug, Clone)]
struct Written {
    /// The inline modules it is written in (`mod tests { .. }`).
    inline: Vec<String>,
    path: Vec<String>,
    /// In a `pub use`: the name it exports.
    reexport: bool,
    name: Option<String>,
}

/// A token of stripped code: a word, `::`, or one punctuation character.
fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// Every path of a file's stripped code: in its `use` declarations
/// (trees expanded) and in its code.
fn scan(code: &str) -> Vec<Written> {
    let t = tokens(code);
    let mut out = Vec::new();
    // The inline modules open at each brace depth.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let here: Vec<String> = inline.iter().map(|(name, _)| name.clone()).collect();
        match t[i].as_str() {
            "{" => {
                depth += 1;
                i += 1;
            }
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
            }
            "mod" if t.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((t[i + 1].clone(), depth));
                i += 2;
            }
            "use" => {
                let reexport = i > 0 && (t[i - 1] == "pub" || t[i - 1] == ")");
                let end = (i..t.len()).find(|&j| t[j] == ";").unwrap_or(t.len());
                for (path, name) in use_tree(&t[i + 1..end], Vec::new()) {
                    out.push(Written {
                        inline: here.clone(),
                        path,
                        reexport,
                        name,
                    });
                }
                i = end + 1;
            }
            word if is_word(word) && t.get(i + 1).map(String::as_str) == Some("::") && (i == 0 || t[i - 1] != "::") => {
                let mut path = vec![word.to_owned()];
                let mut j = i + 1;
                while t.get(j).map(String::as_str) == Some("::") && t.get(j + 1).is_some_and(|w| is_word(w)) {
                    path.push(t[j + 1].clone());
                    j += 2;
                }
                out.push(Written {
                    inline: here.clone(),
                    path,
                    reexport: false,
                    name: None,
                });
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

fn is_word(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
}

/// The paths of a `use` tree (without `use` and `;`), each with the name
/// it binds (`None` for a glob).
fn use_tree(t: &[String], prefix: Vec<String>) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    let mut path = prefix;
    let mut i = 0;
    if t.first().map(String::as_str) == Some("::") {
        return out; // an extern crate by absolute path
    }
    while i < t.len() {
        match t[i].as_str() {
            "::" => i += 1,
            "*" => {
                out.push((path.clone(), None));
                return out;
            }
            "{" => {
                // The branches, split at the commas of this level.
                let mut level = 0;
                let mut start = i + 1;
                for j in i + 1..t.len() {
                    match t[j].as_str() {
                        "{" => level += 1,
                        "}" if level == 0 => {
                            if start < j {
                                out.extend(use_tree(&t[start..j], path.clone()));
                            }
                            return out;
                        }
                        "}" => level -= 1,
                        "," if level == 0 => {
                            if start < j {
                                out.extend(use_tree(&t[start..j], path.clone()));
                            }
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return out;
            }
            "self" if !path.is_empty() => {
                let name = alias(&t[i + 1..]).or_else(|| path.last().cloned());
                out.push((path.clone(), name));
                return out;
            }
            word if is_word(word) => {
                path.push(word.to_owned());
                i += 1;
                if i >= t.len() || t[i] == "as" {
                    let name = alias(&t[i..]).or_else(|| Some(word.to_owned()));
                    out.push((path.clone(), name));
                    return out;
                }
            }
            _ => return out,
        }
    }
    out
}

/// `as NAME`, if the tokens start with it.
fn alias(t: &[String]) -> Option<String> {
    (t.first().map(String::as_str) == Some("as"))
        .then(|| t.get(1).cloned())
        .flatten()
}

/// Tarjan's strongly connected components, each sorted.
fn strongly_connected<'a>(graph: &BTreeMap<&'a Path, BTreeSet<&'a Path>>) -> Vec<Vec<&'a Path>> {
    struct State<'a> {
        index: BTreeMap<&'a Path, usize>,
        low: BTreeMap<&'a Path, usize>,
        stack: Vec<&'a Path>,
        on_stack: BTreeSet<&'a Path>,
        out: Vec<Vec<&'a Path>>,
    }
    fn visit<'a>(v: &'a Path, graph: &BTreeMap<&'a Path, BTreeSet<&'a Path>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, graph, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(v, graph, &mut state);
        }
    }
    state.out
}

fn init() -> Crate {
    Crate::read(&workspace_root().join("init/src"))
}

#[test]
fn vminitd_imports_only_point_down_the_layers() {
    let krate = init();
    assert!(
        krate.imports.len() > 100,
        "the scan finds vminitd's imports: {}",
        krate.imports.len()
    );
    let wrong = krate.upward_imports();
    assert!(
        wrong.is_empty(),
        "imports that point up the layers (rpc > guest, container > process > child > sys):\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn no_two_files_of_vminitd_import_each_other() {
    let krate = init();
    let cycles = krate.cycles(&krate.root.clone());
    assert!(
        cycles.is_empty(),
        "import cycles in init/src:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn no_two_files_of_host_shims_network_import_each_other() {
    let krate = Crate::read(&workspace_root().join("host-shim/src"));
    let network = krate.root.join("network");
    let cycles = krate.cycles(&network);
    assert!(
        cycles.is_empty(),
        "import cycles in host-shim/src/network:\n  {}",
        cycles.join("\n  ")
    );
}

/// A crate from `(file, source)` pairs under `src/`.
fn synthetic(files: &[(&str, &str)]) -> Crate {
    let src = Path::new("/synthetic/src");
    let sources = files
        .iter()
        .map(|(name, text)| {
            let file = src.join(name);
            (
                Module {
                    path: module_path(src, &file),
                    file,
                },
                text.to_string(),
            )
        })
        .collect();
    Crate::from_sources(src, sources)
}

#[test]
fn the_check_names_an_upward_import_and_a_cycle() {
    let krate = synthetic(&[
        ("lib.rs", "mod sys; mod process; mod rpc; mod guest; mod container;"),
        ("sys/mod.rs", "pub mod fdio;"),
        // In a comment and a string, `crate::rpc` is no import.
        (
            "sys/fdio.rs",
            "// crate::rpc::x\nconst S: &str = \"crate::rpc::agent\";\nuse crate::rpc::agent::{self, Agent};",
        ),
        ("process/mod.rs", "mod table; pub use table::Process;"),
        ("process/table.rs", "use crate::sys::fdio; fn f() -> char { 'a' }"),
        ("rpc/mod.rs", "pub mod agent;"),
        (
            "rpc/agent.rs",
            "use crate::process::Process;\n#[cfg(test)]\nmod tests { use super::*; }",
        ),
        ("guest/mod.rs", "fn f() { crate::container::engine::run(); }"),
        ("container/mod.rs", "pub mod engine;"),
        ("container/engine.rs", "pub fn run() {}"),
    ]);
    let wrong = krate.upward_imports();
    assert_eq!(
        wrong,
        [
            "guest/mod.rs (guest) imports crate::container::engine::run from container/engine.rs (container)",
            "sys/fdio.rs (sys) imports crate::rpc::agent from rpc/agent.rs (rpc)",
            "sys/fdio.rs (sys) imports crate::rpc::agent::Agent from rpc/agent.rs (rpc)",
        ]
    );
    // rpc/agent.rs → (re-exported) process/table.rs → sys/fdio.rs → rpc/agent.rs.
    let cycles = krate.cycles(&krate.root.clone());
    assert_eq!(
        cycles,
        [
            "3 files import each other in a cycle; one way round: process/table.rs --crate::sys::fdio--> \
          sys/fdio.rs --crate::rpc::agent--> rpc/agent.rs --crate::process::Process--> process/table.rs"
        ]
    );
}

#[test]
fn use_trees_expand_to_every_path_they_name() {
    let t = tokens("crate::{a::{self, B as C}, d::*, e}");
    let paths: Vec<(String, Option<String>)> = use_tree(&t, Vec::new())
        .into_iter()
        .map(|(p, n)| (p.join("::"), n))
        .collect();
    let name = |s: &str| Some(s.to_owned());
    assert_eq!(
        paths,
        [
            ("crate::a".to_owned(), name("a")),
            ("crate::a::B".to_owned(), name("C")),
            ("crate::d".to_owned(), None),
            ("crate::e".to_owned(), name("e")),
        ]
    );
    let code = "a /* b /* c */ d */ e 'x' 'a r#\"crate::q\"# \"s\\\"t\" f // g\nh";
    let stripped = strip(code);
    assert_eq!(stripped.len(), code.len(), "positions kept");
    assert_eq!(
        stripped.split_whitespace().collect::<Vec<_>>(),
        ["a", "e", "'a", "f", "h"]
    );
}
