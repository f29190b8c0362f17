//! The `switchyard` binary: logging set-up, then the CLI.

// jemalloc, not glibc's allocator: under load glibc's `malloc` and `free`
// were ~13% of the server's samples, beside futex wake-ups of its arena
// locks, with the async runtime's, sled's and the group commit's threads
// freeing what others allocated. In one set of rounds the end-to-end
// benchmark went from 3,199 to 5,746 runs/s and from 0.52 to 0.29 ms of
// server CPU per run (BENCHMARKS.md, "jemalloc"). With the options below
// it holds no more memory at idle than glibc's.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc's options, read when it starts: a background thread returns
// freed pages to the kernel, dirty pages after one second instead of ten,
// and none are kept in the lazily-purged "muzzy" state. This brings idle
// RSS back to glibc's level (its anonymous part from 21.7 to 15.0 MB) at
// no cost in throughput that the benchmarks could see. An operator can
// still override any of them with `_RJEM_MALLOC_CONF`, which jemalloc
// reads after this string. jemalloc looks the symbol up by name (its
// `malloc_conf`, prefixed by `tikv-jemalloc-sys`), so it must be exported
// unmangled, which is why this needs `unsafe`; it reads a C string (`const
// char *`), hence a reference to the first byte of one.
#[cfg(all(unix, not(target_env = "musl")))]
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: &u8 =
    &c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".to_bytes_with_nul()[0];

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
