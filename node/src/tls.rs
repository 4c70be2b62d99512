//! The viewer plane's TLS identity (`listen.https`): a PEM certificate chain and key from
//! `http.tls_cert` / `http.tls_key`, served with rustls (ring provider) and ALPN `h2` and
//! `http/1.1`. The files are checked every [`RELOAD_CHECK`] and re-read when either changed,
//! so a renewed certificate (certbot, any ACME client) reaches new connections while the open
//! ones finish on the one they started with; a renewal that does not load keeps the old one and
//! says why.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context};
use mhc_config::TlsFiles;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);
/// Largest PEM file read (a chain of a few certificates is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// What identifies a version of a file: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The viewer plane's TLS configuration, reloaded when its files change.
#[derive(Debug)]
pub struct ViewerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<(Stamp, Stamp)>,
}

impl ViewerTls {
    /// Loads the certificate chain and key of `files`.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not belong to the
    /// certificate; the message names the file.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Arc<Self>> {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let config = server_config(files)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// An acceptor with the configuration of now; connections keep theirs after a reload.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read()))
    }

    /// Re-reads the files if either changed since the last load; `Ok(true)` if a new
    /// certificate is now in use.
    ///
    /// # Errors
    /// The changed files do not load: the old certificate stays in use.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        let mut seen = self.stamps.lock();
        if *seen == now {
            return Ok(false);
        }
        // Remember the attempt either way: a broken renewal is reported once, not every check.
        *seen = now;
        drop(seen);
        let config = server_config(&self.files)?;
        *self.current.write() = Arc::new(config);
        Ok(true)
    }

    /// Checks the files every [`RELOAD_CHECK`] until `shutdown` turns true.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let this = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => tracing::error!(
                    error = %format!("{err:#}"),
                    "TLS certificate files changed but do not load; still serving the previous certificate"
                ),
                Err(err) => tracing::error!(error = %err, "TLS reload task failed"),
            }
        }
    }
}

/// Reads at most [`MAX_PEM_BYTES`] of `path`.
fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the TLS {what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the TLS {what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bail!(
            "the TLS {what} {} is larger than {MAX_PEM_BYTES} bytes",
            path.display()
        );
    }
    Ok(bytes)
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN h2 then http/1.1) of `files`.
fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(&read_pem(&files.cert, "certificate")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    if chain.is_empty() {
        bail!(
            "{}: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks, leaf first)",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem(&files.key, "key")?).map_err(|e| {
        anyhow!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "{} and {} are not a certificate and its key",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_identity(dir: &Path, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn loads_reloads_on_change_and_keeps_the_old_identity_when_the_new_one_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_identity(dir.path(), "a.example");
        let tls = ViewerTls::load(&files).unwrap();
        let first = Arc::clone(&tls.current.read());
        assert_eq!(
            first.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!tls.reload_if_changed().unwrap(), "nothing changed");

        let other = tempfile::tempdir().unwrap();
        write_identity(other.path(), "b.example");
        std::fs::copy(other.path().join("cert.pem"), &files.cert).unwrap();
        std::fs::copy(other.path().join("key.pem"), &files.key).unwrap();
        assert!(tls.reload_if_changed().unwrap());
        let second = Arc::clone(&tls.current.read());
        assert!(!Arc::ptr_eq(&first, &second));

        // A key that is not the certificate's: refused, the current identity stays.
        let third = tempfile::tempdir().unwrap();
        write_identity(third.path(), "c.example");
        std::fs::copy(third.path().join("key.pem"), &files.key).unwrap();
        let err = tls.reload_if_changed().unwrap_err();
        assert!(format!("{err:#}").contains("key.pem"), "{err:#}");
        assert!(Arc::ptr_eq(&second, &tls.current.read()));
        assert!(
            !tls.reload_if_changed().unwrap(),
            "a broken renewal is reported once"
        );
    }

    #[test]
    fn a_file_that_is_not_pem_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_identity(dir.path(), "a.example");
        std::fs::write(&files.cert, b"not a certificate").unwrap();
        let err = ViewerTls::load(&files).unwrap_err();
        assert!(format!("{err:#}").contains("cert.pem"), "{err:#}");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: files.key.clone(),
        };
        let err = ViewerTls::load(&missing).unwrap_err();
        assert!(format!("{err:#}").contains("nope.pem"), "{err:#}");
    }
}
