//! Builds the connectors written in other languages (Python with
//! componentize-py, JavaScript with componentize-js) by running each one's
//! `build.sh`, which installs its pinned tool under `target/polyglot/tools`.
//!
//! A build takes 10-20 s and cargo runs this script once per profile and mode
//! (check, test, clippy...), each with its own `OUT_DIR`; so the components
//! are cached in `target/polyglot/cache` by a hash of everything they are
//! built from, and only copied into `OUT_DIR` when the hash is known.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Artifact;

/// A connector built by its own script: the directory under `plugins/`
/// (also its package name) and the file that pins its build tool.
const FOREIGN: &[(&str, &str)] = &[
    ("shipping-py", "requirements-build.txt"),
    ("woocommerce-js", "package-lock.json"),
];

/// Generated or installed files that are not sources (bindings an editor
/// may have generated next to the Python code among them).
const SKIP: &[&str] = &[
    "node_modules",
    "dist",
    "__pycache__",
    ".venv",
    "wit_world",
    "componentize_py_types.py",
    "componentize_py_runtime.pyi",
    "componentize_py_async_support",
    "poll_loop.py",
];

/// Builds (or takes from the cache) every foreign connector, in parallel.
pub(crate) fn build(root: &Path, out_dir: &Path) -> Vec<Artifact> {
    // A relative CARGO_TARGET_DIR is relative to where cargo ran (the
    // repository root), not to this script's directory.
    let work = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                root.join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| root.join("target"))
        .join("polyglot");
    let cache = work.join("cache");
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
    std::thread::scope(|scope| {
        let builds: Vec<_> = FOREIGN
            .iter()
            .map(|&(name, pin)| {
                let (work, cache) = (&work, &cache);
                scope.spawn(move || build_one(root, name, pin, work, cache, out_dir))
            })
            .collect();
        builds
            .into_iter()
            .map(|b| b.join().expect("a foreign build panicked"))
            .collect()
    })
}

fn build_one(
    root: &Path,
    name: &str,
    pin: &str,
    work: &Path,
    cache: &Path,
    out_dir: &Path,
) -> Artifact {
    let dir = root.join("plugins").join(name);
    let inputs = inputs(root, &dir);
    // Rerunning is cheap (a hash and a copy), so the whole directory is
    // watched: a new source file counts too.
    println!("cargo:rerun-if-changed={}", dir.display());
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }

    let key = hash(root, &inputs);
    let cached = cache.join(format!("{name}-{key:016x}.wasm"));
    if !cached.exists() {
        let started = std::time::Instant::now();
        let script = dir.join("build.sh");
        // Another cargo may be building the same thing: build under a name of
        // this process, then rename (atomic) over the cache entry.
        let partial = cache.join(format!("{name}-{key:016x}.{}.partial", std::process::id()));
        let output = Command::new("bash")
            .arg(&script)
            .arg(&partial)
            .env("SWITCHYARD_TOOLS_DIR", work.join("tools"))
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        if !output.status.success() || fs::rename(&partial, &cached).is_err() {
            panic!(
                "building plugins/{name} failed ({}). It needs {}; `./dev test` installs them.\n\
                 stdout:\n{}\nstderr:\n{}",
                output.status,
                if name.ends_with("-py") {
                    "python3 with venv"
                } else {
                    "node and npm"
                },
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // In the script's output (`cargo build -vv` shows it), not a warning:
        // cargo would replay a warning on every later build.
        println!(
            "built plugins/{name} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        // Older builds of the same connector are of no more use.
        for entry in fs::read_dir(cache).into_iter().flatten().flatten() {
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            let is_entry = file
                .strip_prefix(&format!("{name}-"))
                .and_then(|rest| rest.strip_suffix(".wasm"))
                .is_some_and(|key| key.len() == 16 && key.chars().all(|c| c.is_ascii_hexdigit()));
            if is_entry && path != cached {
                let _ = fs::remove_file(path);
            }
        }
    }

    let path = out_dir.join(format!("{name}.wasm"));
    let _ = fs::remove_file(&path);
    if fs::hard_link(&cached, &path).is_err() {
        fs::copy(&cached, &path)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", cached.display(), path.display()));
    }
    Artifact {
        name: name.to_string(),
        path,
        manifest: dir.join(pin),
    }
}

/// The files a connector is built from: its directory (less installed or
/// generated files), its language's SDK package and the WIT, sorted.
fn inputs(root: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    // The SDK package of the connector's language is part of its build.
    let sdk = if dir.to_string_lossy().ends_with("-py") {
        root.join("sdk/python/src")
    } else {
        root.join("sdk/js/src")
    };
    let mut pending = vec![dir.to_path_buf(), root.join("wit"), sdk];
    while let Some(path) = pending.pop() {
        let entries =
            fs::read_dir(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            let skip = SKIP.iter().any(|s| entry.file_name() == *s);
            if skip {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path);
            }
        }
    }
    files.into_iter().collect()
}

/// A hash of the inputs' paths (relative to the repository) and contents.
/// std's SipHash with its fixed keys is stable for one toolchain, which is
/// all a cache needs.
fn hash(root: &Path, inputs: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for input in inputs {
        let relative = input.strip_prefix(root).unwrap_or(input);
        hasher.write(relative.to_string_lossy().as_bytes());
        let bytes = fs::read(input).unwrap_or_else(|e| panic!("reading {}: {e}", input.display()));
        hasher.write_u64(bytes.len() as u64);
        hasher.write(&bytes);
    }
    hasher.finish()
}
