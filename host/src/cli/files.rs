//! The CLI's file commands: buckets, files (uploaded and downloaded as
//! streams; a file larger than one part goes up in parts), and record jobs
//! (progress, the ledger of a file trigger, replaying the failed records).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Body, Client, iso_ms, print_json, str_of};

#[derive(Debug, Subcommand)]
pub(super) enum BucketCommand {
    /// Create a bucket (names: lowercase letters, digits, `-`, 3 to 63).
    Create {
        name: String,
        /// Delete files older than this many days.
        #[arg(long)]
        retention_days: Option<u32>,
    },
    /// List the buckets, with the space used and the quota.
    List,
    /// Change a bucket's retention (no value: keep files for ever).
    Retention {
        name: String,
        #[arg(long)]
        days: Option<u32>,
    },
    /// Delete an empty bucket.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum FileCommand {
    /// Upload a local file to BUCKET at PATH (in parts when it is larger
    /// than one part).
    Put {
        bucket: String,
        path: String,
        file: PathBuf,
        /// Size of one part of a large upload, in MiB.
        #[arg(long, default_value_t = 64)]
        part_mib: u64,
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download a file to a local path (`-`: standard output).
    Get {
        bucket: String,
        path: String,
        #[arg(default_value = "-")]
        to: String,
    },
    /// List files by prefix or glob (`orders/**/*.csv`).
    List {
        bucket: String,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        glob: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delete a file.
    Delete { bucket: String, path: String },
}

#[derive(Debug, Subcommand)]
pub(super) enum JobCommand {
    /// The record jobs of a run: records read, good, failed, skipped,
    /// bytes, and the files they wrote.
    Show { run: String },
    /// Run the flow again on the same file for the records a job failed,
    /// with the same idempotency keys.
    ReplayFailed { run: String, step: String },
    /// The ledger of a flow's file trigger: every file seen, its status and run.
    Ledger { flow: String },
}

pub(super) async fn bucket(client: &Client, command: BucketCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        BucketCommand::Create {
            name,
            retention_days,
        } => {
            let body = json!({"name": name, "retention_days": retention_days});
            client
                .send(Method::POST, "/v1/buckets", Body::Json(body))
                .await?;
            println!("created bucket {name}");
        }
        BucketCommand::List => {
            let result = client.send(Method::GET, "/v1/buckets", Body::None).await?;
            println!("{:<32} {:<10} CREATED", "NAME", "RETENTION");
            for b in result["buckets"].as_array().into_iter().flatten() {
                let retention = b["retention_days"]
                    .as_u64()
                    .map_or("-".to_string(), |d| format!("{d}d"));
                let created = iso_ms(b["created_at"].as_u64().unwrap_or(0));
                println!("{:<32} {retention:<10} {created}", str_of(&b["name"]));
            }
            let quota = result["quota_bytes"]
                .as_u64()
                .map_or("no quota".to_string(), |q| format!("of {q} bytes"));
            println!("{} bytes used {quota}", result["usage_bytes"]);
        }
        BucketCommand::Retention { name, days } => {
            let body = json!({"retention_days": days});
            let path = format!("/v1/buckets/{name}");
            print_json(&client.send(Method::PATCH, &path, Body::Json(body)).await?);
        }
        BucketCommand::Delete { name } => {
            let path = format!("/v1/buckets/{name}");
            client.send(Method::DELETE, &path, Body::None).await?;
            println!("deleted bucket {name}");
        }
    }
    Ok(())
}

pub(super) async fn file(client: &Client, command: FileCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        FileCommand::Put {
            bucket,
            path,
            file,
            part_mib,
            content_type,
        } => {
            let object = put(
                client,
                &bucket,
                &path,
                &file,
                part_mib.max(1) << 20,
                content_type,
            )
            .await?;
            println!(
                "{bucket}/{path}: {} bytes, sha256 {}",
                object["size"],
                str_of(&object["sha256"])
            );
        }
        FileCommand::Get { bucket, path, to } => get(client, &bucket, &path, &to).await?,
        FileCommand::List {
            bucket,
            prefix,
            glob,
            limit,
        } => {
            let mut after: Option<String> = None;
            let mut shown = 0;
            println!("{:<12} {:<20} PATH", "SIZE", "CREATED");
            loop {
                let mut query = vec![("limit", limit.min(1000).to_string())];
                query.extend(prefix.clone().map(|p| ("prefix", p)));
                query.extend(glob.clone().map(|g| ("glob", g)));
                query.extend(after.clone().map(|a| ("after", a)));
                let query = reqwest::Url::parse_with_params("http://host/", &query)?
                    .query()
                    .unwrap_or_default()
                    .to_string();
                let url = format!("/v1/buckets/{bucket}/files?{query}");
                let page = client.send(Method::GET, &url, Body::None).await?;
                for f in page["files"].as_array().into_iter().flatten() {
                    let created = iso_ms(f["created_at"].as_u64().unwrap_or(0));
                    println!("{:<12} {created:<20} {}", f["size"], str_of(&f["path"]));
                    shown += 1;
                }
                match page["next"].as_str() {
                    Some(next) if shown < limit => after = Some(next.to_string()),
                    _ => break,
                }
            }
        }
        FileCommand::Delete { bucket, path } => {
            let url = format!("/v1/buckets/{bucket}/files/{path}");
            client.send(Method::DELETE, &url, Body::None).await?;
            println!("deleted {bucket}/{path}");
        }
    }
    Ok(())
}

/// Uploads `file`: in one request when it fits one part, else in parts,
/// each streamed from its place in the file.
async fn put(
    client: &Client,
    bucket: &str,
    path: &str,
    file: &std::path::Path,
    part: u64,
    content_type: Option<String>,
) -> anyhow::Result<Value> {
    use reqwest::Method;
    let size = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let open = || async {
        tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))
    };
    if size <= part {
        let url = format!("/v1/buckets/{bucket}/files/{path}");
        let body = reqwest::Body::from(open().await?);
        return client.stream(Method::PUT, &url, body, content_type).await;
    }
    let upload = client
        .send(
            Method::POST,
            &format!("/v1/buckets/{bucket}/uploads"),
            Body::Json(json!({"path": path, "content_type": content_type})),
        )
        .await?;
    let id = str_of(&upload["id"]);
    let parts = size.div_ceil(part);
    for number in 1..=parts {
        use tokio::io::AsyncSeekExt;
        let mut reader = open().await?;
        reader
            .seek(std::io::SeekFrom::Start((number - 1) * part))
            .await?;
        let body = reqwest::Body::wrap_stream(chunks(reader.take(part)));
        let url = format!("/v1/buckets/{bucket}/uploads/{id}/parts/{number}");
        client
            .stream(Method::PUT, &url, body, None)
            .await
            .with_context(|| format!("part {number} of {parts}"))?;
        eprintln!("part {number} of {parts} uploaded");
    }
    let url = format!("/v1/buckets/{bucket}/uploads/{id}/complete");
    client.send(Method::POST, &url, Body::None).await
}

/// A reader as a stream of 64 KiB chunks.
fn chunks(
    reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(reader, |mut reader| async move {
        let mut buffer = vec![0u8; 64 << 10];
        match reader.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(buffer), reader))
            }
            Err(e) => Some((Err(e), reader)),
        }
    })
}

/// Downloads a file chunk by chunk into `to` (`-`: standard output).
async fn get(client: &Client, bucket: &str, path: &str, to: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let url = format!("/v1/buckets/{bucket}/files/{path}");
    let mut response = client.download(&url).await?;
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = if to == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(to)
                .await
                .with_context(|| format!("creating {to}"))?,
        )
    };
    while let Some(chunk) = response.chunk().await.context("reading the file")? {
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    Ok(())
}

pub(super) async fn job(client: &Client, command: JobCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        JobCommand::Show { run } => {
            let result = client
                .send(Method::GET, &format!("/v1/runs/{run}/jobs"), Body::None)
                .await?;
            for job in result["jobs"].as_array().into_iter().flatten() {
                let r = &job["records"];
                let percent = job["percent"]
                    .as_f64()
                    .map_or(String::new(), |p| format!(" ({p:.1}%)"));
                println!(
                    "{} {}{percent}: {} read, {} good, {} failed, {} skipped, {} bytes",
                    str_of(&job["step"]),
                    str_of(&job["state"]),
                    r["read"],
                    r["good"],
                    r["failed"],
                    r["skipped"],
                    r["bytes"]
                );
                for (name, file) in job["files"].as_object().into_iter().flatten() {
                    println!("  {name}: {}", str_of(file));
                }
                if let Some(error) = job["error"].as_str() {
                    println!("  error: {error}");
                }
            }
        }
        JobCommand::ReplayFailed { run, step } => {
            let url = format!("/v1/runs/{run}/jobs/{step}/replay-failed");
            let result = client.send(Method::POST, &url, Body::None).await?;
            println!(
                "replaying {} failed records of {run} as run {}",
                result["failed"],
                str_of(&result["run"])
            );
        }
        JobCommand::Ledger { flow } => {
            let mut after: Option<String> = None;
            println!("{:<8} {:<12} {:<26} PATH", "STATUS", "SIZE", "RUN");
            loop {
                let query = after
                    .as_ref()
                    .map_or(String::new(), |a| format!("&after={a}"));
                let url = format!("/v1/flows/{flow}/ledger?limit=1000{query}");
                let page = client.send(Method::GET, &url, Body::None).await?;
                for e in page["files"].as_array().into_iter().flatten() {
                    let run = e["run"].as_str().unwrap_or("-");
                    println!(
                        "{:<8} {:<12} {run:<26} {}",
                        str_of(&e["status"]),
                        e["size"],
                        str_of(&e["path"])
                    );
                }
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => break,
                }
            }
        }
    }
    Ok(())
}

impl Client {
    /// Sends a streamed body; the answer is JSON.
    async fn stream(
        &self,
        method: reqwest::Method,
        path: &str,
        body: reqwest::Body,
        content_type: Option<String>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(kind) = content_type {
            request = request.header("content-type", kind);
        }
        let response = request.send().await.context("cannot reach the host")?;
        answer(response).await
    }

    /// A download: the response, whose body the caller reads in chunks.
    async fn download(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.context("cannot reach the host")?;
        if response.status().is_success() {
            return Ok(response);
        }
        answer(response).await?;
        bail!("unreachable: an error answer was a success")
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await.context("reading the host's answer")?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        bail!("{message} (HTTP {status})");
    }
    Ok(value)
}
