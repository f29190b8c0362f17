//! Secrets at rest: connection secrets and host-held tokens are sealed with
//! XChaCha20-Poly1305 under one master key before they reach storage. The key
//! comes from the operator (`SWITCHYARD_MASTER_KEY`) or is generated on first
//! start into `<data-dir>/master.key` with owner-only permissions.

use std::{io::Write, path::Path};

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use rand::RngCore;

const NONCE_LEN: usize = 24;

pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

/// A sealed value failed to open: wrong key, or tampered or moved data.
#[derive(Debug, thiserror::Error)]
#[error("a sealed secret could not be opened (wrong master key, or the data was altered)")]
pub struct OpenError;

impl MasterKey {
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        MasterKey {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// The operator's key (base64 of 32 bytes) if given, else the key file,
    /// created with 0600 permissions on first start.
    pub fn load_or_create(configured: Option<&str>, path: &Path) -> anyhow::Result<Self> {
        if let Some(text) = configured {
            return Self::parse(text).context("SWITCHYARD_MASTER_KEY");
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_private(path, BASE64.encode(key).as_bytes())
                    .with_context(|| format!("creating {}", path.display()))?;
                Ok(Self::from_bytes(&key))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let bytes = BASE64
            .decode(text.trim())
            .context("the master key is not base64")?;
        let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!(
                "the master key must be 32 bytes (base64-encoded), not {}",
                bytes.len()
            );
        };
        Ok(Self::from_bytes(&key))
    }

    /// Encrypts `plaintext`, bound to `context` (e.g. the connection id) so a
    /// sealed value cannot be moved to another record. Returns base64 text.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory data");
        BASE64.encode([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, context: &[u8], sealed: &str) -> Result<Vec<u8>, OpenError> {
        let bytes = BASE64.decode(sealed).map_err(|_| OpenError)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| OpenError)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let key = MasterKey::from_bytes(&[7; 32]);
        let sealed = key.seal(b"conn-1", b"s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open(b"conn-1", &sealed).unwrap(), b"s3cret");
        assert!(
            key.open(b"conn-2", &sealed).is_err(),
            "bound to its context"
        );
        assert!(
            MasterKey::from_bytes(&[8; 32])
                .open(b"conn-1", &sealed)
                .is_err()
        );
        let mut bytes = BASE64.decode(&sealed).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        assert!(key.open(b"conn-1", &BASE64.encode(bytes)).is_err());
        assert_ne!(
            key.seal(b"c", b"x"),
            key.seal(b"c", b"x"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = MasterKey::load_or_create(None, &path).unwrap();
        let sealed = first.seal(b"c", b"v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let again = MasterKey::load_or_create(None, &path).unwrap();
        assert_eq!(again.open(b"c", &sealed).unwrap(), b"v");
        assert!(MasterKey::load_or_create(Some("dG9vIHNob3J0"), &path).is_err());
    }
}
