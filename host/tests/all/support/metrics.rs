//! The scrape of a host's `/metrics` (OpenMetrics text) and the reading of
//! one sample, shared by the integration tests and the load benchmark
//! (`benches/load.rs` includes this file).

/// `GET {base_url}/metrics` with a token that may read it (the operator's
/// or the metrics token): the text, after checking it was served.
pub(crate) async fn scrape(client: &reqwest::Client, base_url: &str, token: &str) -> String {
    let response = client
        .get(format!("{base_url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the host answers /metrics");
    assert!(
        response.status().is_success(),
        "/metrics answered {}",
        response.status()
    );
    response.text().await.expect("the metrics text")
}

/// The value of the sample `series` (name and labels exactly as exposed,
/// e.g. `switchyard_runs_total{status="succeeded"}`), if exposed.
pub(crate) fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}
