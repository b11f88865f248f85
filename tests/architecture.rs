//! Keeps the module layout of docs/architecture.md true: every `use crate::…` (and every
//! `crate::x::` path in code) of every file under `src/` must be allowed by the table in
//! docs/architecture.md, and no two files may import each other, directly or in a circle.
//! `scaling` must stay pure: no `.await`, no `kube::Api`/`kube::Client`, no clock.
//!
//! The table is read from the document itself, so the document and the check cannot drift.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The crate's root, where `src/` and `docs/` are.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src dir")
        .map(|e| e.expect("dir entry").path())
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

/// The module path of a file: `src/operator/scale_loop.rs` → `["operator", "scale_loop"]`,
/// `src/operator/mod.rs` → `["operator"]`, `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without comments, string contents, and the unit-test module (tests may
/// reach anywhere in their own module; they are not part of the layout).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                '\n' => out.push('\n'),
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
            }
            '"' => {
                // A char literal `'"'` is not the start of a string.
                if out.ends_with('\'') {
                    out.push(c);
                } else {
                    in_str = true;
                    out.push('"');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands one `use` tree (`crate::{a::{b, c}, d}`) into its leaf paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').expect("closing brace")];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand_use(p)
                .into_iter()
                .map(move |leaf| format!("{prefix}{leaf}"))
        })
        .collect()
}

/// The paths a file imports from the crate, as absolute module paths (`super::` resolved).
fn imports_of(module: &[String], is_mod_file: bool, code: &str) -> BTreeSet<Vec<String>> {
    let mut paths = BTreeSet::new();
    // `use` items, possibly spanning lines.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree = &rest[..end];
        if tree.trim_start().starts_with("crate::") || tree.trim_start().starts_with("super::") {
            for leaf in expand_use(tree) {
                paths.insert(leaf);
            }
        }
    }
    // `crate::x::` and `super::x` paths in code.
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            rest = &rest[i + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.insert(path);
        }
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
            let mut abs: Vec<String> = Vec::new();
            let mut segs = segs.into_iter().peekable();
            match segs.peek() {
                Some(&"crate") => {
                    segs.next();
                }
                Some(&"super") => {
                    // In `a/b.rs` (module a::b) `super` is `a`; in `a/b/mod.rs` (also a::b) too.
                    let _ = is_mod_file;
                    abs = module.to_vec();
                    while segs.peek() == Some(&"super") {
                        segs.next();
                        abs.pop();
                    }
                }
                _ => return None,
            }
            abs.extend(segs.map(|s| s.trim_matches(':').to_string()));
            abs.retain(|s| s != "self" && s != "*");
            (!abs.is_empty()).then_some(abs)
        })
        .collect()
}

/// The file (module path) that defines `path`: its longest prefix that is a module file.
fn file_of(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

/// The table of docs/architecture.md: module → the modules it may import. Rows are
/// `| \`module\` | \`a\`, \`b\` |` between the `<!-- imports -->` and `<!-- /imports -->` marks.
fn allowed_table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let start = doc
        .find("<!-- imports -->")
        .expect("the <!-- imports --> mark in docs/architecture.md");
    let end = doc.find("<!-- /imports -->").expect("the <!-- /imports --> mark");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mut table = BTreeMap::new();
    for line in doc[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || cells[1].starts_with("---") {
            continue;
        }
        let Some(module) = ticked(cells[1]).into_iter().next() else {
            continue;
        };
        table.insert(module, ticked(cells[2]).into_iter().collect());
    }
    table
}

/// One file of the crate: where it is, what it imports (absolute paths), its code.
type SourceFile = (PathBuf, BTreeSet<Vec<String>>, String);

struct Crate {
    /// Module path of each file → the file.
    files: BTreeMap<Vec<String>, SourceFile>,
}

fn read_crate() -> Crate {
    let src = root().join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = BTreeMap::new();
    for path in paths {
        let module = module_of(&src, &path);
        if path.ends_with("main.rs") {
            // The binary is its own crate: `crate::` there is not the library.
            continue;
        }
        let text = fs::read_to_string(&path).expect("read source");
        let code = code_of(&text);
        let is_mod = path.ends_with("mod.rs");
        let imports = imports_of(&module, is_mod, &code);
        files.insert(module, (path, imports, code));
    }
    Crate { files }
}

#[test]
fn every_import_is_allowed_by_the_table() {
    let table = allowed_table();
    let krate = read_crate();
    let tops: BTreeSet<String> = krate.files.keys().filter_map(|m| m.first().cloned()).collect();
    let mut problems = Vec::new();
    for top in &tops {
        if !table.contains_key(top) {
            problems.push(format!(
                "module `{top}` has no row in docs/architecture.md's import table"
            ));
        }
    }
    for row in table.keys() {
        if !tops.contains(row) {
            problems.push(format!(
                "docs/architecture.md's import table names `{row}`, which is not a module"
            ));
        }
    }
    for (module, (path, imports, _)) in &krate.files {
        let Some(top) = module.first() else { continue };
        let allowed = table.get(top).cloned().unwrap_or_default();
        for import in imports {
            let target = &import[0];
            if target == top || allowed.contains(target) || !tops.contains(target) {
                continue;
            }
            problems.push(format!(
                "{} imports `crate::{}`: `{top}` may not import `{target}` (docs/architecture.md)",
                path.strip_prefix(root()).unwrap_or(path).display(),
                import.join("::"),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} import(s) break the layout:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn no_import_circle_between_files() {
    let krate = read_crate();
    let modules: BTreeSet<Vec<String>> = krate.files.keys().cloned().collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, (_, imports, _)) in &krate.files {
        for import in imports {
            let target = file_of(&modules, import);
            // A parent module re-exporting or declaring its children is not a dependency
            // of the children on it; a file's imports of itself are not either.
            if target == *module
                || target.is_empty()
                || module.starts_with(&target)
                || target.starts_with(module)
            {
                continue;
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    // Depth-first search for a back edge; report each circle once.
    let mut state: BTreeMap<Vec<String>, u8> = BTreeMap::new();
    let mut circles = Vec::new();
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, circles),
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut names: Vec<String> = stack[from..].iter().map(|m| m.join("::")).collect();
                    names.push(next.join("::"));
                    circles.push(names.join(" → "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between files:\n{}",
        circles.join("\n")
    );
}

#[test]
fn scaling_stays_pure() {
    let krate = read_crate();
    let mut problems = Vec::new();
    for (module, (path, _, code)) in &krate.files {
        if module.first().map(String::as_str) != Some("scaling") {
            continue;
        }
        for (needle, what) in [
            (".await", "awaits"),
            ("async fn", "is async"),
            ("kube::Api", "calls the API server"),
            ("kube::Client", "holds a client"),
            ("Utc::now", "reads the clock"),
            ("SystemTime::now", "reads the clock"),
            ("Instant::now", "reads the clock"),
            ("tokio::", "uses the runtime"),
        ] {
            if code.contains(needle) {
                problems.push(format!("{} {what} (`{needle}`)", path.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "scaling must stay pure:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_reads_nested_use_trees() {
    let code = code_of(
        "use crate::{a::{b, c::D}, e};\n// use crate::nope;\nfn f() { let s = \"crate::nope::x\"; crate::g::h(); }\n",
    );
    let got = imports_of(&["x".into(), "y".into()], false, &code);
    let got: Vec<String> = got.into_iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["a::b", "a::c::D", "e", "g::h"]);
    let sup = imports_of(&["x".into(), "y".into()], false, "use super::z::W;");
    assert_eq!(
        sup.into_iter().collect::<Vec<_>>(),
        [vec!["x".to_string(), "z".into(), "W".into()]]
    );
}
