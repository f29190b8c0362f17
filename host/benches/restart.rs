//! Restart to ready: registers 20 plugin versions (Python and JavaScript
//! connectors among them), then starts the real
//! `switchyard serve` binary on that data directory several times and times
//! each start until `/health` answers, checking that nothing was recompiled,
//! and reads the idle resident memory.
//! Run with `cargo bench -p switchyard --bench restart`; prints its figures.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use switchyard::{app::App, config::ServeConfig};

const VERSIONS: usize = 20;
const RUNS: usize = 7;
const TOKEN: &str = "benchmark-token-0123456789";

/// Rewrites the fixed-width version marker of the `versioned` fixture.
fn stamp_version(bytes: &[u8], n: usize) -> Vec<u8> {
    let marker = b"stamp-0000";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the versioned fixture carries its marker");
    let mut out = bytes.to_vec();
    out[at..at + marker.len()].copy_from_slice(format!("stamp-{n:04}").as_bytes());
    out
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = ServeConfig::for_data_dir(&data);
        config.token = Some(TOKEN.into());
        let (app, _) = App::open(config).await.unwrap();
        let base = std::fs::read(switchyard_tests::FIXTURE_VERSIONED).unwrap();
        // 17 versions of a small Rust connector, the example connector, and
        // the Python and JavaScript connectors: 20 in all.
        for n in 0..VERSIONS - 3 {
            app.registry
                .upload(stamp_version(&base, n), None)
                .await
                .unwrap();
        }
        for path in [
            switchyard_tests::EXAMPLE,
            switchyard_tests::SHIPPING_PY,
            switchyard_tests::WOOCOMMERCE_JS,
        ] {
            app.registry
                .upload(std::fs::read(path).unwrap(), None)
                .await
                .unwrap();
        }
        assert_eq!(app.registry.list().unwrap().len(), VERSIONS);
    });

    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for run in 0..RUNS {
        let port = free_port();
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data)
            .env("SWITCHYARD_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = started + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{port}/health"))
                .timeout(Duration::from_millis(200))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the host did not become ready");
            std::thread::sleep(Duration::from_millis(2));
        }
        let elapsed = started.elapsed();
        let status: serde_json::Value = client
            .get(format!("http://127.0.0.1:{port}/v1/status"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(status["plugins"], VERSIONS, "{status}");
        assert_eq!(status["compilations"], 0, "a restart recompiled: {status}");
        // Idle: ready, no traffic for a moment.
        std::thread::sleep(Duration::from_millis(500));
        rss.push(common::rss_mib(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        if run > 0 {
            // The first start warms the page cache; report the rest.
            times.push(elapsed);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "restart to ready with {VERSIONS} plugin versions (0 recompiled), {} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        times.len(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
    );
    rss.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "idle RSS after start: min {:.1} MiB, max {:.1} MiB",
        rss[0],
        rss[rss.len() - 1]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
