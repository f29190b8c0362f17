//! Blob files: the bytes of file objects, parts of uploads and a record
//! job's outputs, as files under `<root>/<tenant>/<id>` with random ids.
//! Both backends keep them this way (with PostgreSQL the records that name
//! them are shared, so hosts sharing a store share this directory too).

use std::{
    fs::{self, OpenOptions},
    io,
    path::PathBuf,
};

use rand::RngCore;

use super::{BlobFile, Result, StoreError};

pub(super) struct BlobDir {
    root: PathBuf,
}

fn invalid(what: &str, text: &str) -> StoreError {
    StoreError::Io {
        path: text.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidInput, what.to_string()),
    }
}

fn at(path: &std::path::Path) -> impl FnOnce(io::Error) -> StoreError + use<> {
    let path = path.display().to_string();
    move |source| StoreError::Io { path, source }
}

impl BlobDir {
    pub(super) fn new(root: PathBuf) -> BlobDir {
        BlobDir { root }
    }

    fn tenant_dir(&self, tenant: &str) -> Result<PathBuf> {
        // Tenant ids are ours, but they become a directory name: be strict.
        if tenant.is_empty()
            || !tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid("not a tenant id", tenant));
        }
        Ok(self.root.join(tenant))
    }

    fn path(&self, tenant: &str, id: &str) -> Result<PathBuf> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("not a blob id", id));
        }
        Ok(self.tenant_dir(tenant)?.join(id))
    }

    /// A new, empty blob, open for reading and writing.
    pub(super) fn create(&self, tenant: &str) -> Result<BlobFile> {
        let dir = self.tenant_dir(tenant)?;
        fs::create_dir_all(&dir).map_err(at(&dir))?;
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let path = dir.join(&id);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(at(&path))?;
        Ok(BlobFile { id, file, path })
    }

    pub(super) fn open(&self, tenant: &str, id: &str, write: bool) -> Result<BlobFile> {
        let path = self.path(tenant, id)?;
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(&path)
            .map_err(at(&path))?;
        Ok(BlobFile {
            id: id.to_string(),
            file,
            path,
        })
    }

    /// Deletes a blob; one already gone is not an error.
    pub(super) fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        let path = self.path(tenant, id)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(&path)(e)),
            _ => Ok(()),
        }
    }
}
