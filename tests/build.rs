//! Builds the guest workspace `plugins/` for wasm32-wasip2, and the
//! connectors written in Python and JavaScript (`polyglot`), and writes
//! `$OUT_DIR/plugins.rs`, one path constant per component.
//!
//! The guests get a target directory of their own under `OUT_DIR`: the outer
//! one is locked by the cargo that runs this script, so sharing it would
//! deadlock. The outer build's environment is scrubbed first, because flags
//! meant for the host target (`CARGO_ENCODED_RUSTFLAGS`, clippy's wrapper,
//! `CARGO_CFG_*`...) would otherwise leak into the wasm build.

use std::collections::BTreeSet;
use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "build/polyglot.rs"]
mod polyglot;

const TARGET: &str = "wasm32-wasip2";

/// One built component.
struct Artifact {
    /// The package name, e.g. `fixture-hostile`.
    name: String,
    /// The `.wasm` file.
    path: PathBuf,
    /// The package's manifest, for the docs of the constant.
    manifest: PathBuf,
}

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ lives in the repository root");
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    require_target();
    let mut artifacts = build(&plugins, &out_dir.join("plugins-target"));
    track(root, &plugins, &artifacts);
    artifacts.extend(polyglot::build(root, &out_dir));
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    write_constants(&out_dir.join("plugins.rs"), root, &artifacts);
}

/// Fails with the fix when the wasm32-wasip2 standard library is missing.
fn require_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .unwrap_or_else(|e| panic!("running {rustc:?}: {e}"));
    let libdir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let has_std = output.status.success()
        && fs::read_dir(&libdir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
            })
            .unwrap_or(false);
    if !has_std {
        panic!(
            "the {TARGET} standard library is not installed (looked in {libdir:?}).\n\
             The plugins are built for it: run `rustup target add {TARGET}` once."
        );
    }
}

/// Runs `cargo build --release --target wasm32-wasip2` on the guest
/// workspace and returns the components it produced.
fn build(plugins: &Path, target_dir: &Path) -> Vec<Artifact> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(plugins)
        .arg("build")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .args(["--workspace", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics");
    for (key, _) in env::vars_os() {
        if leaks_into_guest_build(&key) {
            command.env_remove(&key);
        }
    }
    command.env("CARGO_TARGET_DIR", target_dir);
    let output = command
        .output()
        .expect("running cargo to build the plugins");
    if !output.status.success() {
        panic!(
            "building plugins/ for {TARGET} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let mut artifacts = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        let (Some(wasm), Some(lib), Some(manifest)) = (
            wasm,
            message["target"]["name"].as_str(),
            message["manifest_path"].as_str(),
        ) else {
            panic!("unexpected artifact message from cargo: {line}");
        };
        artifacts.push(Artifact {
            // Library names are package names with `-` turned into `_`; the
            // plugins' package names use no `_`.
            name: lib.replace('_', "-"),
            path: PathBuf::from(wasm),
            manifest: PathBuf::from(manifest),
        });
    }
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        !artifacts.is_empty(),
        "cargo built no component in plugins/"
    );
    artifacts
}

/// Whether an environment variable of this (outer) build would change the
/// guest build: flags and wrappers for the host target, and the variables
/// cargo sets for this build script (a leftover `CARGO_CFG_UNIX` or
/// `OUT_DIR` would mislead the guests' own build scripts and macros).
fn leaks_into_guest_build(key: &OsString) -> bool {
    let Some(key) = key.to_str() else {
        return false;
    };
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_RUSTDOCFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "RUSTC_LINKER",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_PROFILE_",
        "DEP_",
    ];
    EXACT.contains(&key)
        || PREFIXES.iter().any(|p| key.starts_with(p))
        || (key.starts_with("CARGO_TARGET_") && key.ends_with("_RUSTFLAGS"))
}

/// Reruns this script when a guest's sources (from the `.d` files), a
/// manifest, the lock file or the WIT change, or a fixture is added.
fn track(root: &Path, plugins: &Path, artifacts: &[Artifact]) {
    let mut paths = BTreeSet::new();
    paths.insert(plugins.join("Cargo.toml"));
    paths.insert(plugins.join("Cargo.lock"));
    paths.insert(plugins.join("fixtures"));
    paths.insert(root.join("sdk").join("Cargo.toml"));
    paths.insert(root.join("wit"));
    for artifact in artifacts {
        paths.insert(artifact.manifest.clone());
        let dep_info = artifact.path.with_extension("d");
        let text = fs::read_to_string(&dep_info)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dep_info.display()));
        // Registry sources are immutable; only files of this repository matter.
        paths.extend(dep_info_sources(&text).filter(|p| p.starts_with(root)));
    }
    for path in paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The dependencies listed in a Makefile-style `.d` file (`target: dep dep`),
/// where a space inside a path is written `\ `.
fn dep_info_sources(text: &str) -> impl Iterator<Item = PathBuf> + '_ {
    text.lines()
        .filter_map(|line| line.split_once(": ").map(|(_, deps)| deps))
        .flat_map(|deps| {
            let mut paths = Vec::new();
            let mut current = String::new();
            let mut chars = deps.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&' ') => {
                        current.push(' ');
                        chars.next();
                    }
                    ' ' => {
                        if !current.is_empty() {
                            paths.push(PathBuf::from(std::mem::take(&mut current)));
                        }
                    }
                    _ => current.push(c),
                }
            }
            if !current.is_empty() {
                paths.push(PathBuf::from(current));
            }
            paths
        })
}

/// Writes one `pub const NAME: &str = "<path>";` per component, and `ALL`.
fn write_constants(file: &Path, root: &Path, artifacts: &[Artifact]) {
    let mut src = String::from("// Generated by tests/build.rs from plugins/.\n\n");
    for artifact in artifacts {
        let package_dir = artifact
            .manifest
            .parent()
            .and_then(|dir| dir.strip_prefix(root).ok())
            .map_or_else(|| artifact.name.clone(), |dir| dir.display().to_string());
        let _ = writeln!(
            src,
            "/// The `{}` component, built from `{package_dir}`.\npub const {}: &str = {:?};\n",
            artifact.name,
            constant_name(&artifact.name),
            artifact.path.display().to_string(),
        );
    }
    src.push_str("/// Every component as (package name, path), sorted by name.\n");
    src.push_str("pub const ALL: &[(&str, &str)] = &[\n");
    for artifact in artifacts {
        let _ = writeln!(
            src,
            "    ({:?}, {}),",
            artifact.name,
            constant_name(&artifact.name)
        );
    }
    src.push_str("];\n");
    fs::write(file, src).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
}

/// `fixture-hostile` becomes `FIXTURE_HOSTILE`.
fn constant_name(package: &str) -> String {
    package.to_uppercase().replace('-', "_")
}
