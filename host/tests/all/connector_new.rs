//! `switchyard connector new`: each template, written into a temporary
//! directory outside this repository, passes its own test (`test.sh`, against
//! a fake of the API), builds (`build.sh`), and the component it builds
//! passes `switchyard connector test` against the fixtures the template
//! comes with. One test per language. Also here: the CLI's shell completions.
//!
//! The builds reuse what the test build already made: the Rust template
//! builds into the plugins' target directory (wit-bindgen and the SDK are
//! built there, with the same release profile and, through the template's
//! Cargo.lock, the same versions), and the Python and JavaScript templates
//! share `target/polyglot/tools` with the polyglot plugins' builds.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use switchyard_tests as artifacts;

use crate::support::serve::BIN;

/// The `sdk/` directory of this repository.
fn sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

/// The workspace's target directory (this test binary is in `TARGET/debug/deps`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test binary is in TARGET/PROFILE/deps")
        .to_path_buf()
}

/// The target directory the plugins were built in by `switchyard-tests`
/// (`…/plugins-target/wasm32-wasip2/release/example.wasm`).
fn plugins_target_dir() -> PathBuf {
    Path::new(artifacts::EXAMPLE)
        .ancestors()
        .nth(3)
        .expect("the example component is in TARGET/wasm32-wasip2/release")
        .to_path_buf()
}

/// Runs `switchyard connector new NAME --lang LANG` into `dir/NAME`.
fn generate(dir: &Path, name: &str, lang: &str) -> PathBuf {
    let project = dir.join(name);
    let output = Command::new(BIN)
        .args(["connector", "new", name, "--lang", lang, "--dir"])
        .arg(&project)
        .arg("--sdk")
        .arg(sdk())
        .output()
        .unwrap();
    let out = succeeded("connector new", &output);
    assert!(out.contains(&format!("({lang}):")), "{out}");
    assert!(out.contains("next: "), "{out}");
    project
}

/// Runs a script of a generated project, with the outer cargo's flags for
/// its own build removed.
fn run(project: &Path, script: &str, env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(project.join(script));
    command.current_dir(project);
    for key in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    succeeded(script, &output)
}

fn succeeded(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `switchyard connector test ARGS PROJECT` and returns its output.
fn connector_test(project: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(["connector", "test"])
        .args(args)
        .arg(project)
        .env("SWITCHYARD_INTERPRETER", artifacts::DECLARATIVE_INTERPRETER)
        .output()
        .unwrap();
    succeeded("connector test", &output)
}

/// The template's action and polling trigger replay its fixtures.
fn replays_its_fixtures(project: &Path, key: &str, cursor: &[&str]) {
    let out = connector_test(
        project,
        &["--action", "create-item", "--input", r#"{"name": "a"}"#],
    );
    assert!(
        out.contains(&format!("{key}@0.1.0, action create-item")),
        "{out}"
    );
    assert!(out.contains("POST /items <- create-item.json"), "{out}");
    assert!(out.contains(r#""id": 7"#), "{out}");

    let mut args = vec!["--trigger", "new-item"];
    args.extend_from_slice(cursor);
    let out = connector_test(project, &args);
    assert!(out.contains("GET /items <- new-item.json"), "{out}");
    let result = &out[out.find("result:").expect(&out)..];
    assert!(
        result.contains(r#""id": "1""#) && result.contains(r#""id": "2""#),
        "{out}"
    );
}

#[test]
fn rust_template_builds_and_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = generate(dir.path(), "acme-rs", "rust");
    let target = plugins_target_dir();
    let env = [("CARGO_TARGET_DIR", target.as_path())];
    let tested = run(&project, "test.sh", &env);
    assert!(tested.contains("3 passed; 0 failed"), "{tested}");
    run(&project, "build.sh", &env);
    replays_its_fixtures(&project, "acme-rs", &[]);
}

#[test]
fn python_template_builds_and_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = generate(dir.path(), "acme-py", "python");
    let tools = target_dir().join("polyglot/tools");
    // unittest reports on stderr; a failure fails the script.
    run(&project, "test.sh", &[]);
    run(
        &project,
        "build.sh",
        &[("SWITCHYARD_TOOLS_DIR", tools.as_path())],
    );
    replays_its_fixtures(&project, "acme-py", &[]);
}

#[test]
fn js_template_builds_and_passes_its_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = generate(dir.path(), "acme-js", "js");
    let tools = target_dir().join("polyglot/tools");
    let tested = run(&project, "test.sh", &[]);
    assert!(
        tested.contains("# pass 4") && tested.contains("# fail 0"),
        "{tested}"
    );
    run(
        &project,
        "build.sh",
        &[("SWITCHYARD_TOOLS_DIR", tools.as_path())],
    );
    replays_its_fixtures(&project, "acme-js", &[]);
}

#[test]
fn yaml_template_replays_its_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let project = generate(dir.path(), "acme-yaml", "yaml");
    replays_its_fixtures(&project, "acme-yaml", &["--cursor", "2026-01-01T00:00:00Z"]);
}

#[test]
fn new_refuses_a_bad_name_and_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["connector", "new", "Acme_CRM", "--lang", "rust", "--dir"])
        .arg(dir.path().join("x"))
        .arg("--sdk")
        .arg(sdk())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`Acme_CRM` is not a connector key"),
        "{stderr}"
    );

    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let output = Command::new(BIN)
        .args(["connector", "new", "acme", "--lang", "yaml", "--dir"])
        .arg(dir.path())
        .arg("--sdk")
        .arg(sdk())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exists and is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker, lang, fixture) in [
        ("bash", "_switchyard()", "--lang", "--fixture"),
        ("zsh", "#compdef switchyard", "--lang", "--fixture"),
        ("fish", "complete -c switchyard", "-l lang", "-l fixture"),
    ] {
        let output = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = succeeded(shell, &output);
        assert!(script.contains(marker), "{shell}: {script}");
        // Subcommands and their options are completed, the new ones too.
        for word in ["connector", lang, fixture, "plugin"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let output = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value 'tcsh'"));
}
