//! The architecture's rules, checked on the source (rust-analyzer's tidy
//! tests are the model): every file says what it is for, dependencies point
//! down the layers ARCHITECTURE.md draws, only `app.rs` names a storage
//! backend, nothing outside `store/` builds a storage key or batch, and no
//! service is an `impl App` block.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// The host's modules from the bottom up. A module may use modules of its
/// own layer and of the layers below, never above.
const LAYERS: &[&[&str]] = &[
    &["clock", "tasks", "metrics", "secrets", "schema", "store"],
    &["manifest", "sandbox", "declarative"],
    &["engine"],
    &["connector", "error"],
    &["registry", "tenants", "users", "topics"],
    &["connections"],
    &["calls"],
    &["oauth", "flows", "drafts", "files"],
    &["runs"],
    &["triggers"],
    &["api", "console"],
    &["config"],
    &["app"],
    &["cli", "fuzzing"],
    &["lib", "main"],
];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ lives in the repository")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            // Build output, installed packages and fuzzing corpora are not ours to read.
            if !matches!(
                name.as_ref(),
                "target" | "node_modules" | "corpus" | "artifacts"
            ) {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// A file's text without its test module (tests may reach anywhere).
fn production_part(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The host module a source file belongs to (`runs` for `src/runs/executor.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file under src/");
    let first = relative
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a text names through `crate::`, including every
/// branch of `use crate::{a::X, b, c::{...}}`.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.extend(first_segment(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_segment(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.extend(first_segment(rest));
        }
    }
    found
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn host_sources() -> (PathBuf, Vec<PathBuf>) {
    let src = repository().join("host/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn every_rust_file_opens_with_a_doc_comment() {
    let root = repository();
    let mut files = Vec::new();
    for dir in ["host", "sdk", "plugins", "tests", "fuzz"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 100, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//!") && !text.contains("automatically generated")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line saying what they are for: {missing:#?}"
    );
}

#[test]
fn dependencies_point_down_the_layers() {
    let (src, files) = host_sources();
    let mut upward = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(own) = layer_of(&module) else {
            upward.push(format!(
                "{module}: not in the layer table of tests/all/tidy.rs (and ARCHITECTURE.md)"
            ));
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        for used in crate_references(production_part(&text)) {
            match layer_of(&used) {
                Some(layer) if layer > own => upward.push(format!(
                    "{} uses `crate::{used}`, a layer above `{module}`",
                    file.strip_prefix(&src).unwrap().display()
                )),
                Some(_) => {}
                None => upward.push(format!(
                    "{} uses `crate::{used}`, which is in no layer",
                    file.strip_prefix(&src).unwrap().display()
                )),
            }
        }
    }
    assert!(upward.is_empty(), "{upward:#?}");
}

#[test]
fn only_app_names_a_storage_backend_and_only_store_builds_keys() {
    let (src, files) = host_sources();
    let mut broken = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        if relative.starts_with("store") {
            continue;
        }
        let name = relative.display().to_string();
        let text = fs::read_to_string(file).unwrap();
        let code = production_part(&text);
        if name != "app.rs" && (code.contains("SledStore") || code.contains("store::sled")) {
            broken.push(format!("{name} names the sled backend; only app.rs may"));
        }
        if name != "app.rs" && (code.contains("PgStore") || code.contains("store::postgres")) {
            broken.push(format!(
                "{name} names the PostgreSQL backend; only app.rs may"
            ));
        }
        // The byte-level storage API and NUL-joined keys belong to store/.
        for needle in ["sled::", "Op::", "scan_prefix(", "scan_from("] {
            if code.contains(needle) && !(name == "app.rs" && needle == "sled::") {
                broken.push(format!("{name} uses `{needle}`, which belongs to store/"));
            }
        }
        let nul = code.matches("\\0").count() - code.matches("\\0asm").count();
        if nul > 0 {
            broken.push(format!(
                "{name} joins text with NUL: keys are built in store/"
            ));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

#[test]
fn services_are_not_impl_app_blocks() {
    let (src, files) = host_sources();
    let outside: Vec<String> = files
        .iter()
        .filter(|f| f.strip_prefix(&src).unwrap() != Path::new("app.rs"))
        .filter(|f| {
            fs::read_to_string(f)
                .unwrap()
                .lines()
                .any(|l| l.starts_with("impl App"))
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "`impl App` outside app.rs (write a service instead): {outside:?}"
    );
}

#[test]
fn the_reference_parser_sees_every_branch_of_a_use_group() {
    let text = "use crate::{\n    calls::{Call, Purpose},\n    clock::now_ms,\n    store::{Along, x::{Y}},\n};\nlet t = crate::tenants::DEFAULT;";
    let found: Vec<String> = crate_references(text).into_iter().collect();
    assert_eq!(found, ["calls", "clock", "store", "tenants"]);
}
