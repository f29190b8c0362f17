//! `switchyard connector new`: writes a connector project (Rust, Python,
//! JavaScript or a declarative YAML spec) from the templates embedded in the
//! binary (`cli/templates/`), ready to build and test where it is written.
//! `switchyard connector test`: runs one operation of a connector in a host
//! of its own, through the host's call path (`Calls`), against the fixture
//! server of `fixtures.rs`. `switchyard connector watch`: rebuilds a project
//! on change and pushes development versions (`watch.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};

use super::{
    Client,
    connector_test::{self, Operation},
    watch,
};

#[derive(Debug, Subcommand)]
pub(super) enum ConnectorCommand {
    /// Write a new connector project: a manifest with one action, one
    /// polling trigger and one webhook trigger, a README, `build.sh`, and
    /// `test.sh` with a test against a fake of the API.
    ///
    /// Example: switchyard connector new acme-crm --lang python
    New {
        /// The connector's key: lowercase letters, digits and `-`, starting
        /// with a letter (for example `acme-crm`).
        name: String,
        /// The language of the project.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: ./NAME). Must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The `sdk/` directory of a Switchyard checkout (the WIT contract is
        /// beside it, in `wit/`). The project refers to it by this path.
        /// Default: the checkout this binary was built from, if it is still there.
        #[arg(long, env = "SWITCHYARD_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Run one operation of a connector locally, in the host's sandbox,
    /// against a fixture server on 127.0.0.1 that replays request/response
    /// pairs (FIXTURE_DIR/*.json); prints the HTTP journal and the result.
    /// Fails, with what differed, when the connector sends a request no
    /// fixture matches. The connection's `base_url` is the fixture server;
    /// other properties come from FIXTURE_DIR/connection.json.
    ///
    /// A webhook trigger is handed a recorded delivery (`--webhook FILE`:
    /// method, query, headers, body); the host checks its signature with
    /// the secret in the connection's properties, as it does for a real one,
    /// and the events and the synchronous response are printed.
    ///
    /// Example: switchyard connector test --action create-item --input '{"name": "a"}' .
    ///
    /// Example: switchyard connector test --trigger item-event --webhook delivery.json .
    Test {
        /// A component (`.wasm`), a spec (`.yaml`), or a project directory
        /// (its `connector.yaml`, or the one `.wasm` in its `dist/`).
        connector: PathBuf,
        /// The action to run...
        #[arg(long, conflicts_with = "trigger")]
        action: Option<String>,
        /// ...with this input (JSON).
        #[arg(long, default_value = "{}")]
        input: String,
        /// The idempotency key the action gets.
        #[arg(long, default_value = "connector-test")]
        idempotency_key: String,
        /// Or the trigger to poll (or to hand `--webhook`)...
        #[arg(long)]
        trigger: Option<String>,
        /// ...with these params (JSON)...
        #[arg(long, default_value = "{}")]
        params: String,
        /// ...from this cursor (none: the first poll).
        #[arg(long, conflicts_with = "webhook")]
        cursor: Option<String>,
        /// ...or, for a webhook trigger, this recorded delivery (JSON:
        /// `{"method": "POST", "headers": {...}, "body": "..."}`; a string
        /// body is sent byte for byte).
        #[arg(long, value_name = "FILE", requires = "trigger")]
        webhook: Option<PathBuf>,
        /// The fixtures (default: the project's `fixtures/`, or `fixtures/`
        /// beside the component or spec).
        #[arg(long)]
        fixture: Option<PathBuf>,
        /// The declarative interpreter component, to test a spec.
        #[arg(long, env = "SWITCHYARD_INTERPRETER")]
        interpreter: Option<PathBuf>,
    },
    /// Rebuild a project whenever its sources change and push each good
    /// build to running hosts as a development version: `X.Y.Z-dev.N` after
    /// the manifest's `X.Y.Z`, numbered by each host. Flows keep the
    /// releases they use (a requirement such as `^1.2` or `1.2.0` never
    /// picks a development build); invoke one by its exact version. A build
    /// that fails prints its errors and the watch goes on.
    ///
    /// Example: switchyard connector watch --dir acme-crm --host http://127.0.0.1:8080
    Watch {
        /// The project (a `connector.yaml`, or a `build.sh` that writes the
        /// component into `dist/`).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A host to push to (repeat for several; default: --server).
        #[arg(long = "host", value_name = "URL")]
        hosts: Vec<String>,
        /// Build and push once, then exit (non-zero when it failed).
        #[arg(long)]
        once: bool,
    },
}

/// The languages `connector new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Lang {
    Rust,
    Python,
    Js,
    Yaml,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::Yaml => "yaml",
        }
    }
}

/// Runs a `connector` command; `server` and `token` are where `watch`
/// pushes when it is given no `--host`.
pub(super) async fn connector(
    command: ConnectorCommand,
    server: &str,
    token: Option<String>,
) -> anyhow::Result<()> {
    match command {
        ConnectorCommand::Watch { dir, hosts, once } => {
            let hosts = if hosts.is_empty() {
                vec![server.to_string()]
            } else {
                hosts
            };
            let clients = hosts
                .iter()
                .map(|host| Client::new(host, token.clone()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            watch::watch(&dir, clients, once).await
        }
        ConnectorCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = match sdk {
                Some(sdk) => sdk,
                None => default_sdk().context(
                    "no SDK found where this binary was built: pass --sdk with the `sdk/` \
                     directory of a Switchyard checkout",
                )?,
            };
            let written = new_project(&name, lang, &dir, &sdk)?;
            println!("wrote {} ({}):", dir.display(), lang.name());
            for file in written {
                println!("  {file}");
            }
            let dir = dir.display();
            match lang {
                Lang::Yaml => {
                    println!(
                        "next: switchyard connector test --action create-item --input \
                         '{{\"name\": \"a\"}}' {dir}   (with SWITCHYARD_INTERPRETER set)"
                    );
                    println!("      switchyard plugin push {dir}/connector.yaml");
                }
                _ => {
                    println!("next: cd {dir} && ./test.sh && ./build.sh");
                    println!(
                        "      switchyard connector test --action create-item --input \
                         '{{\"name\": \"a\"}}' {dir}"
                    );
                }
            }
            Ok(())
        }
        ConnectorCommand::Test {
            connector,
            action,
            input,
            idempotency_key,
            trigger,
            params,
            cursor,
            webhook,
            fixture,
            interpreter,
        } => {
            let operation = match (action, trigger, webhook) {
                (Some(action), None, _) => Operation::Action {
                    action,
                    input: json_arg(&input, "input")?,
                    idempotency_key,
                },
                (None, Some(trigger), None) => Operation::Poll {
                    trigger,
                    params: json_arg(&params, "params")?,
                    cursor,
                },
                (None, Some(trigger), Some(file)) => Operation::Webhook {
                    trigger,
                    params: json_arg(&params, "params")?,
                    delivery: connector_test::read_delivery(&file)?,
                },
                _ => bail!("say what to run: --action NAME or --trigger NAME"),
            };
            let passed = connector_test::run(&connector, fixture, interpreter, operation).await?;
            if !passed {
                bail!("the test failed");
            }
            Ok(())
        }
    }
}

fn json_arg(text: &str, what: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("--{what} is not valid JSON: {text}"))
}

/// The SDK of the checkout this binary was built from, when it still exists.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// One file of a template: its path in the project, its text, and whether
/// it is a script to mark executable.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
    /// A name in `text` that stands for the connector's key: files shared
    /// with a connector of this repository (so that their pins stay the
    /// same) name that connector.
    renamed: Option<&'static str>,
}

const fn file(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        executable: false,
        renamed: None,
    }
}

const fn script(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        executable: true,
        ..file(path, text)
    }
}

/// The fixtures of a code project (`connector test` replays them): the
/// same for every language, since every code project calls the same
/// example API.
const FIXTURES: &[TemplateFile] = &[
    file(
        "fixtures/connection.json",
        include_str!("templates/fixtures/connection.json"),
    ),
    file(
        "fixtures/create-item.json",
        include_str!("templates/fixtures/create-item.json"),
    ),
    file(
        "fixtures/new-item.json",
        include_str!("templates/fixtures/new-item.json"),
    ),
];

const RUST: &[TemplateFile] = &[
    file("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    // The versions this repository's connectors are built and tested with
    // (cargo drops the packages the project does not use).
    file("Cargo.lock", include_str!("../../../plugins/Cargo.lock")),
    file("src/lib.rs", include_str!("templates/rust/lib.rs")),
    file("README.md", include_str!("templates/rust/README.md")),
    file(".gitignore", include_str!("templates/rust/gitignore")),
    script("build.sh", include_str!("templates/rust/build.sh")),
    script("test.sh", include_str!("templates/rust/test.sh")),
];

const PYTHON: &[TemplateFile] = &[
    file("app.py", include_str!("templates/python/app.py")),
    file("test_app.py", include_str!("templates/python/test_app.py")),
    // The pin of plugins/shipping-py: one componentize-py for all.
    file(
        "requirements-build.txt",
        include_str!("../../../plugins/shipping-py/requirements-build.txt"),
    ),
    file("README.md", include_str!("templates/python/README.md")),
    file(".gitignore", include_str!("templates/python/gitignore")),
    script("build.sh", include_str!("templates/python/build.sh")),
    script("test.sh", include_str!("templates/python/test.sh")),
];

const JS: &[TemplateFile] = &[
    file(
        "src/connector.js",
        include_str!("templates/js/connector.js"),
    ),
    file(
        "test/connector.test.js",
        include_str!("templates/js/connector.test.js"),
    ),
    file(
        "test/register.mjs",
        include_str!("templates/js/register.mjs"),
    ),
    file("test/hooks.mjs", include_str!("templates/js/hooks.mjs")),
    file(
        "test/fakes/http.js",
        include_str!("templates/js/fake-http.js"),
    ),
    file(
        "test/fakes/log.js",
        include_str!("templates/js/fake-log.js"),
    ),
    file(
        "test/fakes/webhooks.js",
        include_str!("templates/js/fake-webhooks.js"),
    ),
    file("build.mjs", include_str!("templates/js/build.mjs")),
    file("package.json", include_str!("templates/js/package.json")),
    // The lock of plugins/woocommerce-js: one componentize-js for all.
    TemplateFile {
        renamed: Some("switchyard-woocommerce"),
        ..file(
            "package-lock.json",
            include_str!("../../../plugins/woocommerce-js/package-lock.json"),
        )
    },
    file("README.md", include_str!("templates/js/README.md")),
    file(".gitignore", include_str!("templates/js/gitignore")),
    script("build.sh", include_str!("templates/js/build.sh")),
    script("test.sh", include_str!("templates/js/test.sh")),
];

const YAML: &[TemplateFile] = &[
    file(
        "connector.yaml",
        include_str!("templates/yaml/connector.yaml"),
    ),
    file("README.md", include_str!("templates/yaml/README.md")),
    file(
        "fixtures/connection.json",
        include_str!("templates/fixtures/connection.json"),
    ),
    file(
        "fixtures/create-item.json",
        include_str!("templates/fixtures/create-item.json"),
    ),
    file(
        "fixtures/new-item.json",
        include_str!("templates/fixtures/new-item-yaml.json"),
    ),
];

/// The files of a project in `lang`. (A spec's polling trigger pages
/// differently, so the YAML project brings its own fixtures.)
fn template(lang: Lang) -> impl Iterator<Item = &'static TemplateFile> {
    let (own, fixtures) = match lang {
        Lang::Rust => (RUST, FIXTURES),
        Lang::Python => (PYTHON, FIXTURES),
        Lang::Js => (JS, FIXTURES),
        Lang::Yaml => (YAML, &[][..]),
    };
    own.iter().chain(fixtures)
}

/// Writes the project for `name` in `lang` into `dir` and returns the paths
/// it wrote, relative to `dir`.
fn new_project(
    name: &str,
    lang: Lang,
    dir: &Path,
    sdk: &Path,
) -> anyhow::Result<Vec<&'static str>> {
    check_name(name)?;
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK directory {}", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!(
            "{} is not the `sdk/` directory of a Switchyard checkout (it has no Cargo.toml)",
            sdk.display()
        );
    }
    let sdk_text = sdk
        .to_str()
        .with_context(|| format!("the SDK path {} is not UTF-8", sdk.display()))?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: choose another --dir",
            dir.display()
        );
    }
    let mut written = Vec::new();
    for file in template(lang) {
        let mut text = fill(file.text, name, sdk_text);
        if let Some(renamed) = file.renamed {
            text = text.replace(&format!("\"{renamed}\""), &format!("\"{name}\""));
        }
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if file.executable {
            make_executable(&path)?;
        }
        written.push(file.path);
    }
    Ok(written)
}

/// A connector key: `[a-z][a-z0-9-]*`, no `-` at the end or twice in a row.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !valid {
        bail!(
            "`{name}` is not a connector key: use lowercase letters, digits and single `-`, \
             starting with a letter (for example `acme-crm`)"
        );
    }
    Ok(())
}

/// The template's text with its placeholders filled in: `@@name@@` (the
/// key), `@@lib@@` (the key as a Rust library name), `@@title@@` (the key in
/// words) and `@@sdk@@` (the SDK directory).
fn fill(text: &str, name: &str, sdk: &str) -> String {
    let title = name
        .split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    text.replace("@@name@@", name)
        .replace("@@lib@@", &name.replace('-', "_"))
        .replace("@@title@@", &title)
        .replace("@@sdk@@", sdk)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_keys() {
        for good in ["a", "acme-crm", "shop2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "2shop", "acme_crm", "acme-", "a--b", "a b"] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("is not a connector key"), "{bad}: {err}");
        }
    }

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(
            fill("@@name@@ @@lib@@ @@title@@ @@sdk@@", "acme-crm", "/x/sdk"),
            "acme-crm acme_crm Acme Crm /x/sdk"
        );
    }

    #[test]
    fn every_template_is_filled_completely() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::Yaml] {
            for file in template(lang) {
                let text = fill(file.text, "acme-crm", "/x/sdk");
                assert!(!text.contains("@@"), "{lang:?} {}: {text}", file.path);
            }
        }
    }
}
