//! The real `switchyard` binary: `serve` in a child process, killed when
//! dropped (also when a test fails), for the tests of the CLI and of a crash.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The operator token `serve` generated and printed, when it did.
    pub generated_token: Option<String>,
}

impl Serve {
    /// `switchyard serve` on a free port of 127.0.0.1 with `data_dir` and
    /// `load_dir` and `args`; returns once it printed where it listens.
    pub fn start(data_dir: &Path, load_dir: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .arg("--load-dir")
            .arg(load_dir)
            .args(args)
            .env_remove("SWITCHYARD_TOKEN")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("switchyard starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut generated_token = None;
        let url = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(t) = line.trim().strip_prefix("export SWITCHYARD_TOKEN=") {
                generated_token = Some(t.to_string());
            }
            if let Some(url) = line.strip_prefix("switchyard listening on ") {
                break url.to_string();
            }
        };
        Serve {
            child,
            url,
            generated_token,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
