//! [`FileStore`] on PostgreSQL: buckets, objects (paths in byte order, so a
//! prefix lists a folder as on sled), each tenant's usage (added to in the
//! transaction that changes an object), uploads in parts, file triggers'
//! ledgers and record jobs' progress, every record as the same JSON as on
//! sled. The bytes are blob files under `<data-dir>/files`, which hosts
//! sharing a store must share (a mounted volume), as they share the records
//! that name them.

use super::{PgStore, pg};
use crate::store::{
    BlobFile, BucketRecord, FileStore, JobProgress, LedgerEntry, ObjectRecord, Result,
    UploadRecord, decode, encode,
};

/// Rows of `SELECT record …` decoded as `place`'s records.
fn records<T: serde::de::DeserializeOwned>(place: &str, rows: Vec<Vec<u8>>) -> Result<Vec<T>> {
    rows.iter().map(|bytes| decode(place, bytes)).collect()
}

/// `LIMIT` for a page size (`usize::MAX` is every row).
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// The `record` column of the rows of `sql` with these text arguments.
    fn record_rows(&self, sql: &'static str, args: Vec<String>) -> Result<Vec<Vec<u8>>> {
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(sql).await.map_err(pg)?;
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                Ok(c.query(&stmt, &params)
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect())
            })
        })
    }

    /// Runs one statement with text arguments and a record.
    fn write_record(&self, sql: &'static str, args: Vec<String>, record: Vec<u8>) -> Result<()> {
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(sql).await.map_err(pg)?;
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                if !record.is_empty() {
                    params.push(&record);
                }
                c.execute(&stmt, &params).await.map_err(pg)?;
                Ok(())
            })
        })
    }

    fn one<T: serde::de::DeserializeOwned>(
        &self,
        place: &str,
        sql: &'static str,
        args: Vec<String>,
    ) -> Result<Option<T>> {
        Ok(records(place, self.record_rows(sql, args)?)?
            .into_iter()
            .next())
    }

    /// Replaces or removes the object at `(tenant, bucket, path)` and moves
    /// the tenant's usage by the difference, in one transaction under the
    /// object's row lock; returns what was there.
    fn change_object(
        &self,
        key: [String; 3],
        new: Option<(u64, Vec<u8>)>,
    ) -> Result<Option<ObjectRecord>> {
        let old: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let [tenant, bucket, path] = &key;
                let tx = c.transaction().await.map_err(pg)?;
                let old: Option<Vec<u8>> = tx
                    .query_opt(
                        "SELECT record FROM file_objects
                         WHERE tenant = $1 AND bucket = $2 AND path = $3 FOR UPDATE",
                        &[tenant, bucket, path],
                    )
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0));
                let old_size = match &old {
                    Some(bytes) => decode::<ObjectRecord>("file_objects", bytes)?.size,
                    None => 0,
                };
                let new_size = new.as_ref().map_or(0, |(size, _)| *size);
                match &new {
                    Some((_, record)) => {
                        tx.execute(
                            "INSERT INTO file_objects (tenant, bucket, path, record)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (tenant, bucket, path) DO UPDATE SET record = $4",
                            &[tenant, bucket, path, record],
                        )
                        .await
                        .map_err(pg)?;
                    }
                    None if old.is_some() => {
                        tx.execute(
                            "DELETE FROM file_objects
                             WHERE tenant = $1 AND bucket = $2 AND path = $3",
                            &[tenant, bucket, path],
                        )
                        .await
                        .map_err(pg)?;
                    }
                    None => return Ok(None),
                }
                let delta = i64::try_from(new_size).unwrap_or(i64::MAX)
                    - i64::try_from(old_size).unwrap_or(i64::MAX);
                tx.execute(
                    "INSERT INTO file_usage (tenant, bytes) VALUES ($1, GREATEST($2::bigint, 0))
                     ON CONFLICT (tenant) DO UPDATE
                     SET bytes = GREATEST(file_usage.bytes + $2::bigint, 0)",
                    &[tenant, &delta],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)?;
                Ok(old)
            })
        })?;
        old.map(|bytes| decode("file_objects", &bytes)).transpose()
    }
}

impl FileStore for PgStore {
    fn bucket(&self, tenant: &str, name: &str) -> Result<Option<BucketRecord>> {
        self.one(
            "buckets",
            "SELECT record FROM buckets WHERE tenant = $1 AND name = $2",
            vec![tenant.into(), name.into()],
        )
    }

    fn buckets(&self, tenant: &str) -> Result<Vec<BucketRecord>> {
        let rows = self.record_rows(
            "SELECT record FROM buckets WHERE tenant = $1 ORDER BY name",
            vec![tenant.into()],
        )?;
        records("buckets", rows)
    }

    fn all_buckets(&self) -> Result<Vec<BucketRecord>> {
        let rows = self.record_rows("SELECT record FROM buckets ORDER BY tenant, name", vec![])?;
        records("buckets", rows)
    }

    fn put_bucket(&self, bucket: &BucketRecord) -> Result<()> {
        self.write_record(
            "INSERT INTO buckets (tenant, name, record) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, name) DO UPDATE SET record = $3",
            vec![bucket.tenant.clone(), bucket.name.clone()],
            encode(bucket),
        )
    }

    fn delete_bucket(&self, tenant: &str, name: &str) -> Result<()> {
        self.write_record(
            "DELETE FROM buckets WHERE tenant = $1 AND name = $2",
            vec![tenant.into(), name.into()],
            Vec::new(),
        )
    }

    fn object(&self, tenant: &str, bucket: &str, path: &str) -> Result<Option<ObjectRecord>> {
        self.one(
            "file_objects",
            "SELECT record FROM file_objects WHERE tenant = $1 AND bucket = $2 AND path = $3",
            vec![tenant.into(), bucket.into(), path.into()],
        )
    }

    fn objects(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit_to: usize,
    ) -> Result<Vec<ObjectRecord>> {
        let args = [tenant, bucket, prefix, after.unwrap_or("")].map(str::to_string);
        let n = limit(limit_to);
        let rows: Vec<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let [tenant, bucket, prefix, after] = &args;
                // Paths compare as bytes (`COLLATE "C"`), as sled's keys do.
                let stmt = c
                    .prepare_cached(
                        "SELECT record FROM file_objects
                         WHERE tenant = $1 AND bucket = $2 AND starts_with(path, $3)
                           AND path > $4
                         ORDER BY path LIMIT $5",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query(&stmt, &[tenant, bucket, prefix, after, &n])
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect())
            })
        })?;
        records("file_objects", rows)
    }

    fn put_object(&self, object: &ObjectRecord) -> Result<Option<ObjectRecord>> {
        self.change_object(
            [&object.tenant, &object.bucket, &object.path].map(String::clone),
            Some((object.size, encode(object))),
        )
    }

    fn delete_object(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
    ) -> Result<Option<ObjectRecord>> {
        self.change_object([tenant, bucket, path].map(str::to_string), None)
    }

    fn usage(&self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("SELECT bytes FROM file_usage WHERE tenant = $1")
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant])
                    .await
                    .map_err(pg)?
                    .map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
            })
        })
    }

    fn upload(&self, tenant: &str, id: &str) -> Result<Option<UploadRecord>> {
        self.one(
            "file_uploads",
            "SELECT record FROM file_uploads WHERE tenant = $1 AND id = $2",
            vec![tenant.into(), id.into()],
        )
    }

    fn put_upload(&self, upload: &UploadRecord) -> Result<()> {
        self.write_record(
            "INSERT INTO file_uploads (tenant, id, record) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, id) DO UPDATE SET record = $3",
            vec![upload.tenant.clone(), upload.id.clone()],
            encode(upload),
        )
    }

    fn delete_upload(&self, tenant: &str, id: &str) -> Result<()> {
        self.write_record(
            "DELETE FROM file_uploads WHERE tenant = $1 AND id = $2",
            vec![tenant.into(), id.into()],
            Vec::new(),
        )
    }

    fn uploads(&self) -> Result<Vec<UploadRecord>> {
        let rows = self.record_rows(
            "SELECT record FROM file_uploads ORDER BY tenant, id",
            vec![],
        )?;
        records("file_uploads", rows)
    }

    fn create_blob(&self, tenant: &str) -> Result<BlobFile> {
        self.file_blobs.create(tenant)
    }

    fn open_blob(&self, tenant: &str, id: &str, write: bool) -> Result<BlobFile> {
        self.file_blobs.open(tenant, id, write)
    }

    fn delete_blob(&self, tenant: &str, id: &str) -> Result<()> {
        self.file_blobs.delete(tenant, id)
    }

    fn ledger_entry(&self, tenant: &str, flow: &str, key: &str) -> Result<Option<LedgerEntry>> {
        self.one(
            "file_ledger",
            "SELECT record FROM file_ledger WHERE tenant = $1 AND flow = $2 AND key = $3",
            vec![tenant.into(), flow.into(), key.into()],
        )
    }

    fn put_ledger_entry(&self, tenant: &str, flow: &str, entry: &LedgerEntry) -> Result<()> {
        self.write_record(
            "INSERT INTO file_ledger (tenant, flow, key, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, flow, key) DO UPDATE SET record = $4",
            vec![tenant.into(), flow.into(), entry.key.clone()],
            encode(entry),
        )
    }

    fn ledger(
        &self,
        tenant: &str,
        flow: &str,
        after: Option<&str>,
        limit_to: usize,
    ) -> Result<Vec<LedgerEntry>> {
        let args = [tenant, flow, after.unwrap_or("")].map(str::to_string);
        let n = limit(limit_to);
        let rows: Vec<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let [tenant, flow, after] = &args;
                let stmt = c
                    .prepare_cached(
                        "SELECT record FROM file_ledger
                         WHERE tenant = $1 AND flow = $2 AND key > $3
                         ORDER BY key LIMIT $4",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query(&stmt, &[tenant, flow, after, &n])
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect())
            })
        })?;
        records("file_ledger", rows)
    }

    fn forget_ledger(&self, tenant: &str, flow: &str) -> Result<()> {
        self.write_record(
            "DELETE FROM file_ledger WHERE tenant = $1 AND flow = $2",
            vec![tenant.into(), flow.into()],
            Vec::new(),
        )
    }

    fn job(&self, tenant: &str, run: &str, step: &str) -> Result<Option<JobProgress>> {
        self.one(
            "record_jobs",
            "SELECT record FROM record_jobs WHERE tenant = $1 AND run = $2 AND step = $3",
            vec![tenant.into(), run.into(), step.into()],
        )
    }

    fn jobs(&self, tenant: &str, run: &str) -> Result<Vec<JobProgress>> {
        let rows = self.record_rows(
            "SELECT record FROM record_jobs WHERE tenant = $1 AND run = $2 ORDER BY step",
            vec![tenant.into(), run.into()],
        )?;
        records("record_jobs", rows)
    }

    /// Every write is committed before it returns: `durable` asks nothing
    /// more of PostgreSQL.
    fn put_job(&self, tenant: &str, progress: &JobProgress, _durable: bool) -> Result<()> {
        self.write_record(
            "INSERT INTO record_jobs (tenant, run, step, record) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, run, step) DO UPDATE SET record = $4",
            vec![tenant.into(), progress.run.clone(), progress.step.clone()],
            encode(progress),
        )
    }
}
