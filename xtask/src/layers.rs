//! `cargo xtask layers`: no module imports from a module that imports it, in any crate.
//!
//! Each crate's module tree is read from its sources (syn), every path a module names
//! (`use` trees and paths in code, outside `#[cfg(test)]`) is resolved to the module that
//! defines the item — following `pub use` re-exports — and the resulting graph must have
//! no cycle. Only modules that are files count (`mod x { … }` blocks belong to their file):
//! a cycle between two files is what a reader has to untangle.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use syn::visit::Visit;

/// A module of a crate, as a path from the crate root (`["http", "forward"]`).
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    /// Names re-exported with `pub use`: name → the absolute path it stands for.
    reexports: BTreeMap<String, ModPath>,
    /// Absolute paths this module names (first segment resolved), with how it names them.
    references: Vec<ModPath>,
}

/// Every cycle among the modules of every crate under `root`, as readable lines.
pub fn cycles(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for crate_dir in crate_dirs(root)? {
        for entry in ["src/lib.rs", "src/main.rs"] {
            let file = crate_dir.join(entry);
            if !file.exists() {
                continue;
            }
            let mut modules = BTreeMap::new();
            read_module(&file, Vec::new(), &mut modules)?;
            let name = crate_dir
                .strip_prefix(root)
                .unwrap_or(&crate_dir)
                .display()
                .to_string();
            for cycle in find_cycles(&graph(&modules)) {
                let files: Vec<String> = cycle
                    .iter()
                    .map(|m| {
                        modules[m]
                            .file
                            .strip_prefix(root)
                            .unwrap_or(&modules[m].file)
                            .display()
                            .to_string()
                    })
                    .collect();
                found.push(format!("{name} ({entry}): {}", files.join(" → ")));
            }
        }
    }
    Ok(found)
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let found = cycles(root)?;
    if found.is_empty() {
        println!("layers: no module imports from a module that imports it");
        return Ok(());
    }
    for cycle in &found {
        eprintln!("import cycle: {cycle}");
    }
    bail!(
        "{} import cycle(s) between modules: move the shared item down to a module both can import",
        found.len()
    )
}

fn crate_dirs(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).context("Cargo.toml")?;
    let mut dirs = Vec::new();
    let mut in_members = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with("members") {
            in_members = true;
            continue;
        }
        if in_members {
            if line.starts_with(']') {
                break;
            }
            let member = line.trim_matches(|c| c == '"' || c == ',' || c == ' ');
            if !member.is_empty() && !member.starts_with('#') {
                dirs.push(root.join(member));
            }
        }
    }
    Ok(dirs)
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>().is_ok_and(|m| match m {
                syn::Meta::Path(p) => p.is_ident("test"),
                // `cfg(any(test, …))` and the like: test-only too.
                syn::Meta::List(l) => {
                    l.tokens
                        .to_string()
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|t| t == "test")
                        && !l.path.is_ident("not")
                }
                syn::Meta::NameValue(_) => false,
            })
    })
}

fn read_module(
    file: &Path,
    path: ModPath,
    modules: &mut BTreeMap<ModPath, Module>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let syntax = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
    // Where `mod x;` of this file is: beside it for lib.rs/main.rs/mod.rs, else in a folder
    // of the file's name.
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let dir = match file.parent() {
        Some(parent) if matches!(stem, "lib" | "main" | "mod") => parent.to_path_buf(),
        Some(parent) => parent.join(stem),
        None => PathBuf::new(),
    };
    let mut collector = Collector::default();
    let mut children = Vec::new();
    for item in &syntax.items {
        match item {
            syn::Item::Mod(m) if is_cfg_test(&m.attrs) => {}
            syn::Item::Mod(m) if m.content.is_none() => {
                let name = m.ident.to_string();
                let candidates = [
                    dir.join(format!("{name}.rs")),
                    dir.join(&name).join("mod.rs"),
                ];
                let Some(child) = candidates.into_iter().find(|c| c.exists()) else {
                    bail!("{}: module {name} has no file", file.display());
                };
                children.push((name, child));
            }
            other => collector.visit_item(other),
        }
    }
    let child_names: BTreeSet<String> = children.iter().map(|(n, _)| n.clone()).collect();
    let mut module = Module {
        file: file.to_path_buf(),
        reexports: BTreeMap::new(),
        references: Vec::new(),
    };
    // Paths in an inline `mod x { … }` are relative to it (its `super` is this file); its
    // own child module names are not tracked, which only loses edges inside the file.
    let resolve = |inline: &[String], segments: &[String]| {
        let mut here = path.clone();
        here.extend(inline.iter().cloned());
        let children = if inline.is_empty() {
            &child_names
        } else {
            &BTreeSet::new()
        };
        resolve_relative(&here, children, segments)
    };
    for (inline, public, tree) in &collector.uses {
        for (alias, target) in flatten_use(tree) {
            let Some(absolute) = resolve(inline, &target) else {
                continue;
            };
            if *public && alias != "*" && inline.is_empty() {
                module.reexports.insert(alias, absolute.clone());
            }
            module.references.push(absolute);
        }
    }
    for (inline, segments) in &collector.paths {
        if let Some(absolute) = resolve(inline, segments) {
            module.references.push(absolute);
        }
    }
    modules.insert(path.clone(), module);
    for (name, child) in children {
        let mut child_path = path.clone();
        child_path.push(name);
        read_module(&child, child_path, modules)?;
    }
    Ok(())
}

/// `segments` as written in module `here` → an absolute path, or `None` for paths into
/// other crates, the prelude, or local names.
fn resolve_relative(
    here: &[String],
    children: &BTreeSet<String>,
    segments: &[String],
) -> Option<ModPath> {
    let first = segments.first()?;
    let mut base: Vec<String>;
    let mut rest = segments;
    match first.as_str() {
        "crate" => {
            base = Vec::new();
            rest = &segments[1..];
        }
        "self" => {
            base = here.to_vec();
            rest = &segments[1..];
        }
        "super" => {
            base = here.to_vec();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        // A lone name is a local value or type, never an item of a child module: a
        // variable named as a child module (`gateway` beside `mod gateway`) is no import.
        name if children.contains(name) && segments.len() > 1 => base = here.to_vec(),
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// `use a::{b, c::d as e, f::*}` → (name it binds, path) pairs.
fn flatten_use(tree: &syn::UseTree) -> Vec<(String, Vec<String>)> {
    fn walk(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                walk(&p.tree, prefix, out);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let mut path = prefix.clone();
                if name != "self" {
                    path.push(name.clone());
                }
                let bound = if name == "self" {
                    prefix.last().cloned().unwrap_or_default()
                } else {
                    name
                };
                out.push((bound, path));
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                if r.ident != "self" {
                    path.push(r.ident.to_string());
                }
                out.push((r.rename.to_string(), path));
            }
            syn::UseTree::Glob(_) => out.push(("*".into(), prefix.clone())),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    walk(item, prefix, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

/// The `use` trees and paths of one file's items, outside `#[cfg(test)]`.
#[derive(Default)]
struct Collector {
    /// (inline module the `use` is in, public, tree).
    uses: Vec<(Vec<String>, bool, syn::UseTree)>,
    /// (inline module the path is in, its segments).
    paths: Vec<(Vec<String>, Vec<String>)>,
    /// The `mod x { … }` blocks being walked, outermost first.
    inline: Vec<String>,
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Use(u) = item {
            let public = matches!(
                u.vis,
                syn::Visibility::Public(_) | syn::Visibility::Restricted(_)
            );
            self.uses
                .push((self.inline.clone(), public, u.tree.clone()));
            return;
        }
        if let syn::Item::Mod(m) = item
            && let Some((_, items)) = &m.content
        {
            self.inline.push(m.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.inline.pop();
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    /// `pub(super)` names a module without taking anything from it.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths.push((
            self.inline.clone(),
            path.segments.iter().map(|s| s.ident.to_string()).collect(),
        ));
        syn::visit::visit_path(self, path);
    }
}

/// Module → the modules it takes items from (itself, its ancestors' declarations of it
/// and paths into other crates left out).
fn graph(modules: &BTreeMap<ModPath, Module>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let debug = std::env::var("WEFT_LAYERS_DEBUG").ok();
    for (path, module) in modules {
        let targets = edges.entry(path.clone()).or_default();
        for reference in &module.references {
            if let Some(target) = defining_module(modules, reference, 0)
                && target != *path
            {
                if debug.as_deref() == Some(module.file.to_string_lossy().as_ref()) {
                    eprintln!("{} -> {target:?} via {reference:?}", module.file.display());
                }
                targets.insert(target);
            }
        }
    }
    edges
}

/// The module that defines what `path` names: its longest module prefix, then through that
/// module's `pub use` of the next segment, if any.
fn defining_module(
    modules: &BTreeMap<ModPath, Module>,
    path: &[String],
    depth: usize,
) -> Option<ModPath> {
    let mut len = path.len();
    while len > 0 && !modules.contains_key(&path[..len]) {
        len -= 1;
    }
    let module = path[..len].to_vec();
    if depth < 8
        && let Some(item) = path.get(len)
        && let Some(target) = modules.get(&module).and_then(|m| m.reexports.get(item))
    {
        let mut through = target.clone();
        through.extend(path[len + 1..].iter().cloned());
        if through != path {
            return defining_module(modules, &through, depth + 1);
        }
    }
    modules.contains_key(&module).then_some(module)
}

/// Each elementary cycle's shortest representative, from every module's strongly connected
/// component (Tarjan), as a path through the component.
fn find_cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let mut cycles = Vec::new();
    for component in components(edges) {
        if component.len() < 2 {
            continue;
        }
        // A shortest cycle through the component's first module (breadth-first).
        let start = &component[0];
        let members: BTreeSet<&ModPath> = component.iter().collect();
        let mut previous: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for next in edges.get(node).into_iter().flatten() {
                if !members.contains(next) {
                    continue;
                }
                if next == start {
                    closing = Some(node);
                    break;
                }
                if !previous.contains_key(next) {
                    previous.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let mut cycle = vec![start.clone()];
        let mut node = closing;
        let mut back = Vec::new();
        while let Some(n) = node {
            if n == start {
                break;
            }
            back.push(n.clone());
            node = previous.get(n).copied();
        }
        back.reverse();
        cycle.extend(back);
        cycle.push(start.clone());
        cycles.push(cycle);
    }
    cycles
}

fn components(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a ModPath) {
            self.index.insert(node, self.next);
            self.low.insert(node, self.next);
            self.next += 1;
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.edges.get(node).into_iter().flatten() {
                let Some((next, _)) = self.edges.get_key_value(next) else {
                    continue;
                };
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                component.sort();
                self.out.push(component);
            }
        }
    }
    let mut tarjan = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for node in edges.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    tarjan.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn cycles_of(files: &[(&str, &str)]) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("weft-layers-{}", fastrand_name()));
        write(
            &dir,
            "Cargo.toml",
            "[workspace]\nmembers = [\n    \"a\",\n]\n",
        );
        for (file, text) in files {
            write(&dir, &format!("a/{file}"), text);
        }
        let found = cycles(&dir).expect("read");
        let _ = std::fs::remove_dir_all(&dir);
        found
    }

    fn fastrand_name() -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn siblings_importing_each_other_are_a_cycle() {
        let found = cycles_of(&[
            ("src/lib.rs", "mod x;\nmod y;\n"),
            ("src/x.rs", "use crate::y::B;\npub struct A;\n"),
            (
                "src/y.rs",
                "pub struct B;\npub fn f() -> crate::x::A { crate::x::A }\n",
            ),
        ]);
        assert_eq!(
            found,
            ["a (src/lib.rs): a/src/x.rs → a/src/y.rs → a/src/x.rs"]
        );
    }

    #[test]
    fn one_way_layers_and_test_modules_are_fine() {
        let found = cycles_of(&[
            ("src/lib.rs", "mod x;\nmod y;\n"),
            (
                "src/x.rs",
                "use crate::y::B;\npub struct A;\n#[cfg(test)]\nmod tests { use crate::y::*; }\n",
            ),
            (
                "src/y.rs",
                "pub struct B;\n#[cfg(test)]\nfn t() -> crate::x::A { crate::x::A }\n",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn re_exports_lead_to_the_defining_module() {
        // y uses `crate::p::A`, which p re-exports from p::inner; p::inner uses y: a cycle
        // between y and p/inner.rs, not p/mod.rs.
        let found = cycles_of(&[
            ("src/lib.rs", "mod p;\nmod y;\n"),
            ("src/p/mod.rs", "mod inner;\npub use self::inner::A;\n"),
            ("src/p/inner.rs", "pub struct A(crate::y::B);\n"),
            ("src/y.rs", "pub struct B;\nfn f(_: crate::p::A) {}\n"),
        ]);
        assert_eq!(
            found,
            ["a (src/lib.rs): a/src/p/inner.rs → a/src/y.rs → a/src/p/inner.rs"]
        );
    }

    #[test]
    fn a_local_named_as_a_child_module_is_no_import() {
        // p/mod.rs passes a variable `child` (its child module's name); child uses p's item.
        let found = cycles_of(&[
            (
                "src/lib.rs",
                "mod p;
",
            ),
            (
                "src/p/mod.rs",
                "mod child;
pub struct A;
fn f(child: u8) -> u8 { child }
",
            ),
            (
                "src/p/child.rs",
                "use super::A;
pub fn g(_: A) {}
",
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }
}
