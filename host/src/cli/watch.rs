//! `switchyard connector watch`: rebuilds a connector project when its
//! sources change and pushes each good build to running hosts as a
//! development version. The host's registry numbers it (`X.Y.Z-dev.N` after
//! the declared `X.Y.Z`, see `registry::Versioning::NextDev`): only the
//! registry knows a component's manifest without running it, and two
//! watchers pushing to one host must not pick the same N. Version
//! requirements without a pre-release never match a development build, so
//! flows keep the release they resolved.

use std::{
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::{Body, Client, connector_test, str_of};

/// How long the sources must be quiet before a rebuild: an editor's save,
/// a `git checkout` or a formatter is one burst of events.
const QUIET: Duration = Duration::from_millis(300);

/// Directories a build writes to or tools keep: changes there are not the
/// author's (and a build's own output must not start the next build).
const IGNORED: &[&str] = &[
    "target",
    "dist",
    "node_modules",
    "__pycache__",
    ".git",
    ".venv",
];

/// A connector project as `connector new` writes it: a spec
/// (`connector.yaml`, pushed as it is), or code built by its `build.sh`
/// into the one component in `dist/`.
#[derive(Debug, Clone)]
pub(super) struct Project {
    dir: PathBuf,
    build: Option<PathBuf>,
}

impl Project {
    pub(super) fn open(dir: &Path) -> anyhow::Result<Project> {
        if !dir.is_dir() {
            bail!("{} is not a directory", dir.display());
        }
        if dir.join("connector.yaml").is_file() {
            return Ok(Project {
                dir: dir.to_path_buf(),
                build: None,
            });
        }
        let script = dir.join("build.sh");
        if !script.is_file() {
            bail!(
                "{} has neither a connector.yaml nor a build.sh: watch a project written by \
                 `switchyard connector new`",
                dir.display()
            );
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            build: Some(script),
        })
    }

    /// Whether a change to `path` is one to rebuild for.
    fn is_source(&self, path: &Path) -> bool {
        let relative = path.strip_prefix(&self.dir).unwrap_or(path);
        let ignored = relative.components().any(|c| match c {
            Component::Normal(name) => name.to_str().is_some_and(|n| IGNORED.contains(&n)),
            _ => false,
        });
        let scratch = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with('~') || n.ends_with(".swp") || n.starts_with(".#"));
        !ignored && !scratch
    }

    /// Runs the build (nothing to run for a spec) and reads what it made.
    /// `Err` is the build's failure with its output.
    async fn build(&self) -> Result<(PathBuf, Vec<u8>), String> {
        if let Some(script) = &self.build {
            let output = tokio::process::Command::new(script)
                .current_dir(&self.dir)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }
        let (file, _) = connector_test::locate(&self.dir).map_err(|e| format!("{e:#}"))?;
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Ok((file, bytes))
    }
}

/// What one cycle did on one host.
#[derive(Debug)]
pub(super) struct Pushed {
    pub(super) host: String,
    /// `key@version`, or why the host refused the build.
    pub(super) outcome: anyhow::Result<(String, bool)>,
}

/// One rebuild and push: builds the project, then pushes the build to every
/// host as its next development version. `Err` is a failed build (with the
/// compiler's output); a host that refuses or cannot be reached is an
/// outcome of its own, the others are still pushed to.
pub(super) async fn cycle(project: &Project, hosts: &[Client]) -> Result<Vec<Pushed>, String> {
    let (file, bytes) = project.build().await?;
    let mut pushed = Vec::new();
    for host in hosts {
        let outcome = push_dev(host, &file, bytes.clone()).await;
        pushed.push(Pushed {
            host: host.base.clone(),
            outcome,
        });
    }
    Ok(pushed)
}

/// Pushes a build as a development version: its `key@version` and whether
/// it is new (`false`: these bytes are already stored).
async fn push_dev(host: &Client, file: &Path, bytes: Vec<u8>) -> anyhow::Result<(String, bool)> {
    let body = if bytes.starts_with(b"\0asm") {
        Body::Bytes(bytes)
    } else {
        Body::Text(
            String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", file.display()))?,
        )
    };
    let answer = host
        .send(reqwest::Method::POST, "/v1/plugins?dev=true", body)
        .await?;
    let plugin = &answer["plugin"];
    Ok((
        format!("{}@{}", str_of(&plugin["key"]), str_of(&plugin["version"])),
        answer["created"] == serde_json::json!(true),
    ))
}

/// Prints what a cycle did; whether everything went through.
fn report(result: &Result<Vec<Pushed>, String>, took: Duration) -> bool {
    match result {
        Err(build) => {
            eprintln!("build failed:\n{}", build.trim_end());
            false
        }
        Ok(pushed) => {
            let mut ok = true;
            for Pushed { host, outcome } in pushed {
                match outcome {
                    Ok((version, true)) => {
                        println!("pushed {version} to {host} ({:.1} s)", took.as_secs_f64())
                    }
                    Ok((version, false)) => println!("unchanged: {version} on {host}"),
                    Err(e) => {
                        ok = false;
                        eprintln!("{host} refused the build: {e:#}");
                    }
                }
            }
            ok
        }
    }
}

/// `switchyard connector watch`: a first build and push, then one after
/// each burst of changes, until Ctrl-C (`once`: the first only, failing
/// when it did).
pub(super) async fn watch(dir: &Path, hosts: Vec<Client>, once: bool) -> anyhow::Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let project = Project::open(&dir)?;
    if once {
        let started = Instant::now();
        let result = cycle(&project, &hosts).await;
        if !report(&result, started.elapsed()) {
            bail!("the build was not pushed everywhere");
        }
        return Ok(());
    }
    // Watching starts before the first build, so no change is missed.
    // Reads are not changes (the build reads every source).
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let sources = project.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                if !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| sources.is_source(p))
                {
                    let _ = changed.send(());
                }
            }
            Err(e) => eprintln!("watching failed: {e}"),
        })
        .context("starting the file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    let hosts_named = hosts
        .iter()
        .map(|h| h.base.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "watching {} for changes; pushing development builds to {hosts_named} (Ctrl-C to stop)",
        dir.display()
    );
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let started = Instant::now();
        report(&cycle(&project, &hosts).await, started.elapsed());
        // A change made during the build is already waiting: it starts
        // the next one.
        tokio::select! {
            change = changes.recv() => {
                if change.is_none() {
                    break;
                }
            }
            _ = &mut stop => break,
        }
        if !quiet(&mut changes).await {
            break;
        }
        println!("changed: rebuilding");
    }
    drop(watcher);
    Ok(())
}

/// Waits until no change came for [`QUIET`]; false when the watcher is gone.
async fn quiet(changes: &mut tokio::sync::mpsc::UnboundedReceiver<()>) -> bool {
    loop {
        match tokio::time::timeout(QUIET, changes.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_scratch_files_are_not_sources() {
        let project = Project {
            dir: PathBuf::from("/p"),
            build: None,
        };
        for (path, source) in [
            ("/p/src/lib.rs", true),
            ("/p/connector.yaml", true),
            ("/p/fixtures/create-item.json", true),
            ("/p/target/wasm32-wasip2/release/x.wasm", false),
            ("/p/dist/x.wasm", false),
            ("/p/node_modules/a/index.js", false),
            ("/p/__pycache__/app.pyc", false),
            ("/p/.git/index", false),
            ("/p/src/.lib.rs.swp", false),
            ("/p/src/lib.rs~", false),
            // Only directories inside the project count.
            ("/p/src/distance.rs", true),
        ] {
            assert_eq!(project.is_source(Path::new(path)), source, "{path}");
        }
    }
}
