//! The crate's module graph has no circles, and `config` depends on nothing above it. Read from the
//! sources themselves (every `crate::<module>` outside a test module), so a new import that closes
//! a circle fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// module -> the crate modules it names (outside `#[cfg(test)] mod tests`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .expect("name");
        if module == "lib" || module == "bin" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(
            !text.contains("crate::{"),
            "{}: grouped `crate::{{…}}` import",
            rel.display()
        );
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let deps = g.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    g
}

/// A circle through `from`, if any (depth-first).
fn circle(g: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>) -> Option<Vec<String>> {
    let last = path.last()?.clone();
    for d in g.get(&last).into_iter().flatten() {
        if let Some(i) = path.iter().position(|p| p == d) {
            let mut c = path[i..].to_vec();
            c.push(d.clone());
            return Some(c);
        }
        path.push(d.clone());
        if let Some(c) = circle(g, path) {
            return Some(c);
        }
        path.pop();
    }
    None
}

#[test]
fn the_module_graph_has_no_circles() {
    let g = graph();
    assert!(g.len() > 20, "found only {:?}", g.keys());
    for m in g.keys() {
        if let Some(c) = circle(&g, &mut vec![m.clone()]) {
            panic!("import circle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn config_depends_only_on_the_pure_base() {
    let g = graph();
    let allowed = [
        "crypto", "json", "jwks", "spelling", "token", "units", "b64", "error", "codes",
    ];
    let config = &g["config"];
    let extra: Vec<&String> = config
        .iter()
        .filter(|d| !allowed.contains(&d.as_str()))
        .collect();
    assert!(extra.is_empty(), "config depends on {extra:?}");
}

#[test]
fn only_the_adapter_and_the_raw_host_calls_know_proxy_wasm() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut knowing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            text.contains("proxy_wasm::") || text.contains("crate::hostcall")
        })
        .map(|f| {
            f.strip_prefix(&src)
                .expect("under src")
                .display()
                .to_string()
        })
        .collect();
    knowing.sort();
    assert_eq!(knowing, ["filter.rs", "hostcall.rs"]);
}
