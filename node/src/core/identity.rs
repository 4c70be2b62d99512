//! The node's ed25519 identity: one 32-byte seed that is the libp2p keypair, the manifest signing
//! key of an origin, and (with the later planes) the iroh secret key and the QUIC certificate key,
//! so a peer id names the node on every plane.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;

/// File name of the identity inside `data_dir`.
pub const NODE_KEY_FILE: &str = "node.key";

/// A node or publisher key and the names it goes by.
pub struct Identity {
    signing_key: SigningKey,
    peer_id: libp2p_identity::PeerId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id.to_string())
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl Identity {
    /// The identity of the 32-byte ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing_key = SigningKey::from_bytes(&seed);
        let mut libp2p_seed = seed;
        let keypair = libp2p_identity::Keypair::ed25519_from_bytes(&mut libp2p_seed)
            .expect("a 32-byte seed is always a valid ed25519 secret key");
        let peer_id = keypair.public().to_peer_id();
        Self {
            signing_key,
            peer_id,
        }
    }

    /// A fresh identity from the operating system's random source.
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn generate() -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).context("reading the OS random source")?;
        Ok(Self::from_seed(seed))
    }

    /// Loads `data_dir/node.key`, creating it (mode 0600) on first start.
    ///
    /// # Errors
    /// The file exists but is not a key, or cannot be read or written.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(NODE_KEY_FILE);
        if path.exists() {
            return Self::load(&path);
        }
        let identity = Self::generate()?;
        identity.write_new(&path)?;
        tracing::info!(peer_id = %identity.peer_id(), path = %path.display(), "created node identity");
        Ok(identity)
    }

    /// Reads a key file: the raw 32-byte seed, or the seed as 64 hex characters.
    ///
    /// # Errors
    /// Unreadable file, wrong length, or permissions that let others read it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "{}: key file is readable by group or others (mode {:o}); run `chmod 600` on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let seed: [u8; 32] = match bytes.len() {
            32 => bytes.try_into().expect("length checked"),
            64 | 65 => {
                let text = std::str::from_utf8(&bytes).unwrap_or_default().trim_end();
                let mut seed = [0u8; 32];
                hex::decode_to_slice(text, &mut seed)
                    .with_context(|| format!("{}: not a hex ed25519 seed", path.display()))?;
                seed
            }
            n => bail!(
                "{}: {n} bytes is not an ed25519 key (expected a 32-byte seed)",
                path.display()
            ),
        };
        Ok(Self::from_seed(seed))
    }

    /// Writes the seed to a new file with mode 0600; refuses to overwrite.
    ///
    /// # Errors
    /// The file exists or cannot be written.
    pub fn write_new(&self, path: &Path) -> anyhow::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating key file {}", path.display()))?;
        file.write_all(self.signing_key.as_bytes())?;
        file.sync_all()?;
        Ok(())
    }

    /// The manifest / message signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The libp2p peer id of this key.
    pub fn peer_id(&self) -> libp2p_identity::PeerId {
        self.peer_id
    }

    /// The raw ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// The public key as lowercase hex, the form `trust.publishers` and `trust.operators` take.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }
}

/// The ed25519 public key a peer id names (every mhc peer id is an ed25519 identity multihash).
pub fn peer_key(peer: &libp2p_identity::PeerId) -> Option<[u8; 32]> {
    let multihash = peer.as_ref();
    // Identity multihash (code 0x00): the digest is the protobuf-encoded public key.
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_private_mode_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.public_key(), b.public_key());
        assert!(a.peer_id().to_string().starts_with("12D3KooW"));
    }

    #[test]
    fn refuses_readable_or_malformed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [7u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Identity::load(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Identity::load(&path).is_ok());
        fs::write(&path, [7u8; 31]).unwrap();
        assert!(Identity::load(&path)
            .unwrap_err()
            .to_string()
            .contains("31 bytes"));
        fs::write(&path, format!("{}\n", hex::encode([9u8; 32]))).unwrap();
        assert_eq!(
            Identity::load(&path).unwrap().public_key(),
            Identity::from_seed([9u8; 32]).public_key()
        );
    }
}
