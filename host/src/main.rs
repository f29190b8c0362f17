//! The `switchyard` binary: logging set-up, then the CLI.

// jemalloc, not glibc's allocator: under load glibc's `malloc` and `free`
// were ~13% of the server's samples, beside futex wake-ups of its arena
// locks, with the async runtime's, sled's and the group commit's threads
// freeing what others allocated. In one set of rounds the end-to-end
// benchmark went from 3,199 to 5,746 runs/s and from 0.52 to 0.29 ms of
// server CPU per run, for 6-11 MB more at idle (BENCHMARKS.md, "jemalloc").
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match switchyard::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
