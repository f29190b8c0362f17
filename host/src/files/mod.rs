//! Files: tenants' buckets ([`Buckets`]: streamed uploads and downloads,
//! uploads in parts, listing by prefix or glob, quota, retention), the file
//! formats read and written record by record (`formats/`), and the data
//! side of a record job (`job.rs`: read, map, validate, write, report,
//! checkpoint). What starts a job (file triggers) is in
//! `triggers/files.rs`; the job as a step of a run is in
//! `runs/interpret/records.rs`.

mod buckets;
pub mod formats;
pub mod job;
pub mod paths;

pub use buckets::{Buckets, FileSettings, Listing, MAX_PARTS};
pub use formats::FormatSpec;
pub use paths::check_bucket_name;
