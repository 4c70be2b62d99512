//! The SFTP client that delivers DDEX drops to DSPs: [`SftpSession`], on `russh` (SSH) and
//! `russh-sftp` (the SFTP v3 wire protocol), in pure Rust.
//!
//! The server is trusted only if it shows exactly the host key of the configuration (never on
//! first use); files appear under their final name only once complete (written to a `.part`
//! name, then renamed); every request is bounded in time, so a stalled DSP cannot hold a
//! delivery forever.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{cipher, client};
use russh_sftp::client::error::Error as RawError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// How long one SFTP request may wait for its answer. A DSP's disk can be slow, but a minute
/// without any answer means the server is stuck: the delivery fails and is retried later.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long cleanup after a failure (closing the handle, removing the `.part` file) and a
/// polite disconnect may take before we give up on them.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// SSH keepalives: every 15 s of silence, and the connection is declared dead after 3
/// unanswered ones, so a vanished server is noticed within a minute even between requests.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 3;
/// The largest write we send: OpenSSH's sftp-server accepts 255 KiB (`limits@openssh.com`) and
/// so does its client; bigger writes only cost memory.
const MAX_WRITE_LEN: usize = 256 * 1024;
/// The write size when the server does not announce its limits: every SFTP server must accept
/// 32 KiB (draft-ietf-secsh-filexfer-02, section 3).
const DEFAULT_WRITE_LEN: usize = 32 * 1024;
/// Chunks read ahead from the source on the blocking thread.
const READ_AHEAD_CHUNKS: usize = 4;
/// Writes sent but not yet acknowledged. With 255 KiB writes that is 4 MiB, twice OpenSSH's
/// 2 MiB channel window, so the window (not the acks) is what paces us, as with `sftp`.
const MAX_WRITES_IN_FLIGHT: usize = 16;
/// russh's default ciphers plus aes128-gcm, which some hardened servers offer alone; all
/// AEAD or encrypt-then-MAC capable, no CBC.
const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];
/// Most names [`SftpSession::list`] keeps from one folder (a batch folder holds a handful).
pub const MAX_LIST_NAMES: usize = 100_000;
/// The SFTP extension that renames over an existing file (plain SFTP v3 rename refuses to).
const POSIX_RENAME: &str = "posix-rename@openssh.com";
const LIMITS: &str = "limits@openssh.com";

/// Where and how to connect (from config `[plugins.label.dsps.<name>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpTarget {
    /// Host name or IP address of the DSP's SFTP server.
    pub host: String,
    /// TCP port (usually 22).
    pub port: u16,
    /// The account we log in as.
    pub user: String,
    /// Our private key: an OpenSSH private key file (ed25519 or RSA), not passphrase-protected.
    pub key: PathBuf,
    /// The server's host key as in `known_hosts` after the host name: `ssh-ed25519 AAAA...`.
    pub known_host: String,
}

impl fmt::Display for SftpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Why an SFTP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The server showed another host key than the configured one: a misconfiguration or a
    /// man in the middle. Nothing was sent after the key exchange.
    #[error("host key mismatch: expected {expected}, the server offered {offered}")]
    HostKeyMismatch {
        /// The configured key (`known_host`).
        expected: String,
        /// The key the server showed, in the same format.
        offered: String,
    },
    /// Our key file is unreadable or unsupported, or `known_host` does not parse.
    #[error("key: {0}")]
    Key(String),
    /// The server refused our key for this user.
    #[error("authentication refused: {0}")]
    Auth(String),
    /// The operation (or connecting) took longer than allowed.
    #[error("timed out")]
    Timeout,
    /// The connection failed or was lost, or reading the local source failed.
    #[error("i/o: {0}")]
    Io(String),
    /// The server broke the SSH or SFTP protocol, or offers nothing we can use.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server answered with an SFTP error status; the message names the path.
    #[error("remote: {0}")]
    Remote(String),
    /// A file that [`SftpSession::read_small`] was asked for is larger than allowed.
    #[error("{path} is larger than {max} bytes")]
    TooLarge {
        /// The remote path.
        path: String,
        /// The limit the caller gave.
        max: usize,
    },
}

impl SftpError {
    /// Whether a retry later may succeed: network trouble, timeouts and the server's own
    /// errors (a full disk, a folder not there yet) may pass; a host key mismatch, a bad key, a
    /// refused login, a broken protocol or an oversized file will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            SftpError::Timeout | SftpError::Io(_) | SftpError::Remote(_) => true,
            SftpError::HostKeyMismatch { .. }
            | SftpError::Key(_)
            | SftpError::Auth(_)
            | SftpError::Protocol(_)
            | SftpError::TooLarge { .. } => false,
        }
    }

    fn from_ssh(err: russh::Error) -> Self {
        use russh::Error as E;
        match err {
            E::IO(e) => SftpError::Io(e.to_string()),
            E::Disconnect
            | E::HUP
            | E::ConnectionTimeout
            | E::KeepaliveTimeout
            | E::InactivityTimeout
            | E::SendError
            | E::RecvError
            | E::Join(_) => SftpError::Io(format!("connection lost: {err}")),
            E::Elapsed(_) => SftpError::Timeout,
            E::CouldNotReadKey | E::Keys(_) => SftpError::Key(err.to_string()),
            other => SftpError::Protocol(other.to_string()),
        }
    }

    /// An SFTP request about `path` failed.
    fn from_sftp(err: RawError, path: &str) -> Self {
        match err {
            RawError::Status(s) => {
                SftpError::Remote(format!("{path}: {}: {}", s.status_code, s.error_message))
            }
            RawError::Timeout => SftpError::Timeout,
            RawError::IO(e) => SftpError::Io(format!("{path}: {e}")),
            RawError::Limited(e) => SftpError::Protocol(format!("{path}: {e}")),
            RawError::UnexpectedPacket => {
                SftpError::Protocol(format!("{path}: unexpected answer from the server"))
            }
            // "session closed", "sender dropped": the SFTP channel is gone.
            RawError::UnexpectedBehavior(e) => SftpError::Io(format!("{path}: {e}")),
        }
    }
}

/// One logged-in SFTP session to a DSP.
///
/// Requests may run concurrently from several tasks (`&self`); each is bounded by a one-minute
/// timeout, and all fail at once when the connection is lost.
pub struct SftpSession {
    ssh: client::Handle<Client>,
    sftp: RawSftpSession,
    /// Never written to: `changed()` fails once the SSH session task has ended.
    ended: watch::Receiver<()>,
    /// Whether the server supports `posix-rename@openssh.com`.
    posix_rename: bool,
    /// Bytes per SFTP write.
    write_len: usize,
    /// `user@host:port`, for logs.
    peer: String,
}

impl fmt::Debug for SftpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpSession")
            .field("peer", &self.peer)
            .field("posix_rename", &self.posix_rename)
            .field("write_len", &self.write_len)
            .finish_non_exhaustive()
    }
}

impl SftpSession {
    /// Connects, checks that the server's host key is exactly `target.known_host` (a mismatch
    /// ends the connection right after the key exchange), logs in with `target.key` (RSA keys
    /// sign with rsa-sha2-512 or -256, as OpenSSH requires) and opens the SFTP subsystem.
    ///
    /// # Errors
    /// [`SftpError::Key`] for an unreadable key file or `known_host`,
    /// [`SftpError::HostKeyMismatch`], [`SftpError::Auth`] when the key is refused,
    /// [`SftpError::Timeout`] when all this takes longer than `timeout`, [`SftpError::Io`]
    /// for network failures.
    ///
    /// # Examples
    /// ```no_run
    /// # async fn demo() -> Result<(), mhc_label::sftp::SftpError> {
    /// use mhc_label::sftp::{SftpSession, SftpTarget};
    /// let target = SftpTarget {
    ///     host: "sftp.dsp.example".into(),
    ///     port: 22,
    ///     user: "label".into(),
    ///     key: "/etc/mhc/dsp_ed25519".into(),
    ///     known_host: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI...".into(),
    /// };
    /// let sftp = SftpSession::connect(&target, std::time::Duration::from_secs(30)).await?;
    /// sftp.mkdir_all("/upload/20250101").await?;
    /// let file = std::fs::File::open("/var/lib/mhc/release.xml").map_err(|e| {
    ///     mhc_label::sftp::SftpError::Io(e.to_string())
    /// })?;
    /// sftp.upload(Box::new(file), "/upload/20250101/release.xml").await?;
    /// sftp.close().await
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future drops the half-made connection; nothing is left behind.
    pub async fn connect(target: &SftpTarget, timeout: Duration) -> Result<Self, SftpError> {
        let key = russh::keys::load_secret_key(&target.key, None)
            .map_err(|e| SftpError::Key(format!("{}: {e}", target.key.display())))?;
        let expected = PublicKey::from_openssh(target.known_host.trim())
            .map_err(|e| SftpError::Key(format!("known_host {:?}: {e}", target.known_host)))?;
        match tokio::time::timeout(timeout, Self::connect_inner(target, key, expected)).await {
            Ok(result) => result,
            Err(_) => Err(SftpError::Timeout),
        }
    }

    async fn connect_inner(
        target: &SftpTarget,
        key: russh::keys::PrivateKey,
        expected: PublicKey,
    ) -> Result<Self, SftpError> {
        let peer = target.to_string();
        // Ask only for the configured kind of host key, as OpenSSH does for hosts in
        // known_hosts: a server with an RSA and an ed25519 key must show the one we know.
        let host_key_algorithms = if expected.algorithm().is_rsa() {
            vec![
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha512),
                },
                Algorithm::Rsa {
                    hash: Some(HashAlg::Sha256),
                },
            ]
        } else {
            vec![expected.algorithm()]
        };
        let config = client::Config {
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: KEEPALIVE_MAX,
            // Requests and acks are small: without this, Nagle's algorithm and delayed ACKs
            // stall every round trip of mkdir, stat and rename.
            nodelay: true,
            preferred: russh::Preferred {
                key: Cow::Owned(host_key_algorithms),
                cipher: Cow::Borrowed(CIPHERS),
                ..russh::Preferred::default()
            },
            ..client::Config::default()
        };
        let (ended_tx, ended) = watch::channel(());
        let handler = Client {
            expected,
            _ended: ended_tx,
        };
        let addr = (target.host.as_str(), target.port);
        let mut ssh = client::connect(Arc::new(config), addr, handler)
            .await
            .map_err(|e| match e {
                HandlerError::HostKey { expected, offered } => {
                    SftpError::HostKeyMismatch { expected, offered }
                }
                HandlerError::Ssh(e) => SftpError::from_ssh(e),
            })?;

        let hash = if key.algorithm().is_rsa() {
            // OpenSSH refuses SHA-1 (`ssh-rsa`) signatures; servers that do not say what
            // they accept get SHA-256, the most widely supported rsa-sha2 variant.
            let best = ssh
                .best_supported_rsa_hash()
                .await
                .map_err(SftpError::from_ssh)?;
            Some(best.flatten().unwrap_or(HashAlg::Sha256))
        } else {
            None
        };
        let auth = ssh
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await
            .map_err(SftpError::from_ssh)?;
        if !auth.success() {
            // A connection lost during authentication looks like a refusal to russh.
            if ssh.is_closed() {
                return Err(SftpError::Io(format!(
                    "{peer}: connection lost during authentication"
                )));
            }
            return Err(SftpError::Auth(format!(
                "{peer}: the server refused the key"
            )));
        }

        let mut channel = ssh
            .channel_open_session()
            .await
            .map_err(SftpError::from_ssh)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(SftpError::from_ssh)?;
        loop {
            match channel.wait().await {
                Some(russh::ChannelMsg::Success) => break,
                Some(russh::ChannelMsg::Failure) => {
                    return Err(SftpError::Protocol(format!(
                        "{peer}: the server refused the sftp subsystem"
                    )))
                }
                Some(_) => {}
                None => {
                    return Err(SftpError::Io(format!(
                        "{peer}: channel closed before the sftp subsystem started"
                    )))
                }
            }
        }

        let config = russh_sftp::client::Config {
            request_timeout_secs: REQUEST_TIMEOUT.as_secs(),
            ..Default::default()
        };
        let mut sftp = RawSftpSession::new_with_config(channel.into_stream(), config);
        let version = sftp
            .init()
            .await
            .map_err(|e| SftpError::from_sftp(e, "sftp init"))?;
        let has = |name: &str| version.extensions.get(name).is_some_and(|v| v == "1");
        let posix_rename = has(POSIX_RENAME);
        let mut write_len = DEFAULT_WRITE_LEN;
        if has(LIMITS) {
            let limits = sftp
                .limits()
                .await
                .map_err(|e| SftpError::from_sftp(e, LIMITS))?;
            if limits.max_write_len > 0 {
                write_len = usize::try_from(limits.max_write_len)
                    .unwrap_or(MAX_WRITE_LEN)
                    .min(MAX_WRITE_LEN);
            }
            sftp.set_limits(limits.into());
        }
        debug!(
            peer = %peer,
            version = version.version,
            posix_rename,
            write_len,
            "sftp session open"
        );
        Ok(SftpSession {
            ssh,
            sftp,
            ended,
            posix_rename,
            write_len,
            peer,
        })
    }

    /// Runs one request (or a few), failing at once if the connection is lost meanwhile.
    async fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, SftpError>>,
    ) -> Result<T, SftpError> {
        let mut ended = self.ended.clone();
        tokio::select! {
            result = fut => result,
            _ = ended.changed() => Err(SftpError::Io(format!("{}: connection lost", self.peer))),
        }
    }

    /// `mkdir -p`: creates each missing folder of `path`; existing ones are fine.
    ///
    /// # Errors
    /// [`SftpError::Remote`] when a component exists but is not a folder or cannot be created;
    /// connection errors.
    ///
    /// # Cancel safety
    /// Cancel-safe: some folders may have been created.
    pub async fn mkdir_all(&self, path: &str) -> Result<(), SftpError> {
        self.run(async {
            if self.is_dir(path).await? {
                return Ok(());
            }
            let mut prefix = String::new();
            for (i, part) in path.split('/').enumerate() {
                if i > 0 {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if part.is_empty() || part == "." {
                    continue;
                }
                if self.is_dir(&prefix).await? {
                    continue;
                }
                if let Err(err) = self
                    .sftp
                    .mkdir(prefix.as_str(), FileAttributes::empty())
                    .await
                {
                    // Someone else may have made it meanwhile.
                    if !self.is_dir(&prefix).await? {
                        return Err(SftpError::from_sftp(err, &prefix));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Whether `path` is a folder (false if it does not exist).
    async fn is_dir(&self, path: &str) -> Result<bool, SftpError> {
        match self.sftp.stat(path).await {
            Ok(attrs) => {
                // S_IFMT: russh-sftp's `is_dir` also says yes for sockets.
                if attrs
                    .attrs
                    .permissions
                    .is_some_and(|m| m & 0o170000 == 0o040000)
                {
                    Ok(true)
                } else {
                    Err(SftpError::Remote(format!(
                        "{path}: exists and is not a folder"
                    )))
                }
            }
            Err(RawError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(false),
            Err(err) => Err(SftpError::from_sftp(err, path)),
        }
    }

    /// The size of the file at `path`, or `None` if there is none.
    ///
    /// # Errors
    /// [`SftpError::Remote`] (e.g. permission denied), [`SftpError::Protocol`] when the server
    /// gives no size; connection errors.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn size_of(&self, path: &str) -> Result<Option<u64>, SftpError> {
        self.run(async {
            match self.sftp.stat(path).await {
                Ok(attrs) => {
                    attrs.attrs.size.map(Some).ok_or_else(|| {
                        SftpError::Protocol(format!("{path}: the server gave no size"))
                    })
                }
                Err(RawError::Status(s)) if s.status_code == StatusCode::NoSuchFile => Ok(None),
                Err(err) => Err(SftpError::from_sftp(err, path)),
            }
        })
        .await
    }

    /// Uploads everything `reader` yields to `final_path`, and returns the number of bytes.
    ///
    /// The bytes go to `.<name>.part` in the same folder, which is renamed to `final_path`
    /// (replacing a file there) only once complete and closed: a failure midway leaves at most
    /// that `.part` file (removed if the connection still works), never a partial file under
    /// the final name. `reader` is read on a blocking thread a few chunks ahead; up to 16
    /// writes are in flight, so memory stays around 5 MiB whatever the size.
    ///
    /// # Errors
    /// [`SftpError::Io`] when reading `reader` fails or the connection is lost,
    /// [`SftpError::Timeout`] when the server does not acknowledge a write within a minute,
    /// [`SftpError::Remote`] (e.g. a full disk).
    ///
    /// # Cancel safety
    /// Not cancel-safe: a dropped upload leaves the `.part` file and its handle open until the
    /// session closes (never a file under `final_path`).
    pub async fn upload(
        &self,
        reader: Box<dyn Read + Send>,
        final_path: &str,
    ) -> Result<u64, SftpError> {
        let (dir, name) = match final_path.rsplit_once('/') {
            Some((dir, name)) => (Some(dir), name),
            None => (None, final_path),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(SftpError::Protocol(format!(
                "{final_path}: not a file name"
            )));
        }
        let part = match dir {
            Some(dir) => format!("{dir}/.{name}.part"),
            None => format!(".{name}.part"),
        };
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let handle = self
            .run(async {
                self.sftp
                    .open(part.as_str(), flags, FileAttributes::empty())
                    .await
                    .map_err(|e| SftpError::from_sftp(e, &part))
            })
            .await?
            .handle;

        let written = match self.run(self.write_all(&handle, reader, &part)).await {
            Ok(written) => written,
            Err(err) => {
                self.discard(handle, &part).await;
                return Err(err);
            }
        };
        self.run(async {
            self.sftp
                .close(handle.as_str())
                .await
                .map_err(|e| SftpError::from_sftp(e, &part))
        })
        .await?;
        self.run(self.rename_over(&part, final_path)).await?;
        debug!(peer = %self.peer, path = final_path, bytes = written, "uploaded");
        Ok(written)
    }

    /// Writes all of `reader` at the start of the open file `handle`, with pipelined writes;
    /// checks the size the server then reports.
    async fn write_all(
        &self,
        handle: &str,
        reader: Box<dyn Read + Send>,
        part: &str,
    ) -> Result<u64, SftpError> {
        let mut chunks = spawn_reader(reader, self.write_len);
        let mut in_flight = FuturesUnordered::new();
        let mut offset = 0u64;
        let mut eof = false;
        while !(eof && in_flight.is_empty()) {
            tokio::select! {
                // Acks first: each frees room for the next write.
                biased;
                Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
                    let ack: Result<_, RawError> = ack;
                    ack.map_err(|e| SftpError::from_sftp(e, part))?;
                }
                chunk = chunks.recv(), if !eof && in_flight.len() < MAX_WRITES_IN_FLIGHT => {
                    match chunk {
                        Some(Ok(data)) => {
                            let len = data.len() as u64;
                            in_flight.push(self.sftp.write(handle, offset, data));
                            offset += len;
                        }
                        Some(Err(e)) => {
                            return Err(SftpError::Io(format!("reading the source of {part}: {e}")))
                        }
                        None => eof = true,
                    }
                }
            }
        }
        let size = self
            .sftp
            .fstat(handle)
            .await
            .map_err(|e| SftpError::from_sftp(e, part))?
            .attrs
            .size;
        if size.is_some_and(|size| size != offset) {
            return Err(SftpError::Remote(format!(
                "{part}: {offset} bytes written but the server has {}",
                size.unwrap_or_default()
            )));
        }
        Ok(offset)
    }

    /// After a failed upload: closes the handle and removes the `.part` file, if the
    /// connection still allows it (bounded; errors only logged).
    async fn discard(&self, handle: String, part: &str) {
        let cleanup = async {
            let _ = self.sftp.close(handle).await;
            self.sftp.remove(part).await
        };
        match tokio::time::timeout(CLEANUP_TIMEOUT, self.run(async { Ok(cleanup.await) })).await {
            Ok(Ok(Ok(_))) => debug!(peer = %self.peer, path = part, "partial upload removed"),
            _ => debug!(peer = %self.peer, path = part, "partial upload left behind"),
        }
    }

    /// Renames `from` to `to`, replacing `to`: atomically with `posix-rename@openssh.com`,
    /// else by removing `to` first (plain SFTP v3 rename refuses to overwrite).
    async fn rename_over(&self, from: &str, to: &str) -> Result<(), SftpError> {
        if self.posix_rename {
            let mut data = Vec::with_capacity(8 + from.len() + to.len());
            for s in [from, to] {
                let len = u32::try_from(s.len())
                    .map_err(|_| SftpError::Protocol(format!("{s}: path too long")))?;
                data.extend_from_slice(&len.to_be_bytes());
                data.extend_from_slice(s.as_bytes());
            }
            return match self.sftp.extended(POSIX_RENAME, data).await {
                Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
                Ok(Packet::Status(s)) => Err(SftpError::Remote(format!(
                    "rename {from} to {to}: {}: {}",
                    s.status_code, s.error_message
                ))),
                Ok(_) => Err(SftpError::Protocol(format!(
                    "rename {from} to {to}: unexpected answer"
                ))),
                Err(e) => Err(SftpError::from_sftp(e, to)),
            };
        }
        match self.sftp.remove(to).await {
            Ok(_) => {}
            Err(RawError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
            Err(e) => return Err(SftpError::from_sftp(e, to)),
        }
        self.sftp
            .rename(from, to)
            .await
            .map(|_| ())
            .map_err(|e| SftpError::from_sftp(e, to))
    }

    /// The names in folder `dir`, without `.` and `..`, in the server's order.
    ///
    /// # Errors
    /// [`SftpError::Remote`] (no such folder, permission denied); connection errors.
    ///
    /// # Cancel safety
    /// Cancel-safe (a cancelled listing leaves a folder handle open until the session closes).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, SftpError> {
        self.run(async {
            let handle = self
                .sftp
                .opendir(dir)
                .await
                .map_err(|e| SftpError::from_sftp(e, dir))?
                .handle;
            let mut names = Vec::new();
            let result = loop {
                match self.sftp.readdir(handle.as_str()).await {
                    Ok(batch) => {
                        names.extend(
                            batch
                                .files
                                .into_iter()
                                .map(|f| f.filename)
                                .filter(|n| n != "." && n != ".."),
                        );
                        // The server decides how many names it sends: bound what we keep.
                        if names.len() > MAX_LIST_NAMES {
                            break Err(SftpError::Protocol(format!(
                                "{dir}: more than {MAX_LIST_NAMES} entries"
                            )));
                        }
                    }
                    Err(RawError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                    Err(e) => break Err(SftpError::from_sftp(e, dir)),
                }
            };
            let closed = self.sftp.close(handle).await;
            result?;
            closed.map_err(|e| SftpError::from_sftp(e, dir))?;
            Ok(names)
        })
        .await
    }

    /// Reads the file at `path` whole, refusing files of more than `max` bytes.
    ///
    /// # Errors
    /// [`SftpError::TooLarge`]; [`SftpError::Remote`] (no such file, permission denied);
    /// connection errors.
    ///
    /// # Cancel safety
    /// Cancel-safe (a cancelled read leaves a handle open until the session closes).
    pub async fn read_small(&self, path: &str, max: usize) -> Result<Vec<u8>, SftpError> {
        /// Bytes per read request; small files need few.
        const READ_LEN: u32 = 32 * 1024;
        let too_large = || SftpError::TooLarge {
            path: path.to_owned(),
            max,
        };
        self.run(async {
            let handle = self
                .sftp
                .open(path, OpenFlags::READ, FileAttributes::empty())
                .await
                .map_err(|e| SftpError::from_sftp(e, path))?
                .handle;
            let mut data = Vec::new();
            let result = loop {
                // The size may change while we read: the limit is checked on what arrives.
                match self
                    .sftp
                    .read(handle.as_str(), data.len() as u64, READ_LEN)
                    .await
                {
                    Ok(chunk) if chunk.data.is_empty() => break Ok(()),
                    Ok(chunk) => {
                        data.extend_from_slice(&chunk.data);
                        if data.len() > max {
                            break Err(too_large());
                        }
                    }
                    Err(RawError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                    Err(e) => break Err(SftpError::from_sftp(e, path)),
                }
            };
            let closed = self.sftp.close(handle).await;
            result?;
            closed.map_err(|e| SftpError::from_sftp(e, path))?;
            Ok(data)
        })
        .await
    }

    /// Removes the file at `path`.
    ///
    /// # Errors
    /// [`SftpError::Remote`] (no such file, permission denied); connection errors.
    ///
    /// # Cancel safety
    /// Cancel-safe (the file may or may not be removed).
    pub async fn remove(&self, path: &str) -> Result<(), SftpError> {
        self.run(async {
            self.sftp
                .remove(path)
                .await
                .map(|_| ())
                .map_err(|e| SftpError::from_sftp(e, path))
        })
        .await
    }

    /// Closes the SFTP channel and disconnects politely (bounded to a few seconds).
    ///
    /// # Errors
    /// [`SftpError::Io`] when the connection was already lost.
    ///
    /// # Cancel safety
    /// Cancel-safe: dropping the session closes the connection too.
    pub async fn close(self) -> Result<(), SftpError> {
        let SftpSession {
            ssh, sftp, peer, ..
        } = self;
        let _ = sftp.close_session();
        drop(sftp);
        let result = ssh
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(SftpError::from_ssh);
        // Let the session task send the disconnect and end.
        if tokio::time::timeout(CLEANUP_TIMEOUT, ssh).await.is_err() {
            warn!(peer = %peer, "ssh session did not end after disconnect");
        }
        result
    }
}

/// Reads `reader` on a blocking thread into chunks of `chunk_len` bytes (the last one
/// shorter), at most [`READ_AHEAD_CHUNKS`] ahead of the consumer. Dropping the receiver stops
/// the thread at its next chunk.
fn spawn_reader(
    mut reader: Box<dyn Read + Send>,
    chunk_len: usize,
) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD_CHUNKS);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0; chunk_len];
        let mut filled = 0;
        while filled < chunk_len {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        let last = filled < chunk_len;
        if tx.blocking_send(Ok(buf)).is_err() || last {
            return;
        }
    });
    rx
}

/// The russh event handler: checks the host key; its drop (when the SSH session task ends)
/// wakes every pending request.
struct Client {
    expected: PublicKey,
    _ended: watch::Sender<()>,
}

/// Errors of the SSH session task.
#[derive(Debug)]
enum HandlerError {
    Ssh(russh::Error),
    HostKey { expected: String, offered: String },
}

impl From<russh::Error> for HandlerError {
    fn from(err: russh::Error) -> Self {
        HandlerError::Ssh(err)
    }
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (matches, offered) = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => (
                key.key_data() == self.expected.key_data(),
                openssh_line(key),
            ),
            // We never ask for certificates; one is not the configured key.
            PublicKeyOrCertificate::Certificate(cert) => (
                false,
                cert.to_openssh()
                    .unwrap_or_else(|_| format!("a {} certificate", cert.algorithm())),
            ),
        };
        if matches {
            return Ok(true);
        }
        // An error (not `false`) so that the caller learns which key was offered.
        Err(HandlerError::HostKey {
            expected: openssh_line(&self.expected),
            offered,
        })
    }
}

/// `ssh-ed25519 AAAA...`, without a comment.
fn openssh_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .unwrap_or_else(|_| format!("an unprintable {} key", key.algorithm()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        assert!(SftpError::Timeout.is_retryable());
        assert!(SftpError::Io("reset".into()).is_retryable());
        assert!(SftpError::Remote("/x: Failure: disk full".into()).is_retryable());
        assert!(!SftpError::Auth("refused".into()).is_retryable());
        assert!(!SftpError::Key("bad".into()).is_retryable());
        assert!(!SftpError::HostKeyMismatch {
            expected: "a".into(),
            offered: "b".into()
        }
        .is_retryable());
    }

    #[test]
    fn reader_chunks_and_stops() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
            let mut rx = spawn_reader(Box::new(std::io::Cursor::new(data.clone())), 4096);
            let mut got = Vec::new();
            let mut sizes = Vec::new();
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.expect("cursor reads");
                sizes.push(chunk.len());
                got.extend(chunk);
            }
            assert_eq!(sizes, [4096, 4096, 1808]);
            assert_eq!(got, data);
        });
    }

    #[tokio::test]
    async fn bad_key_file_is_not_retryable() {
        let target = SftpTarget {
            host: "127.0.0.1".into(),
            port: 1,
            user: "nobody".into(),
            key: "/nonexistent/key".into(),
            known_host:
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                    .into(),
        };
        let err = SftpSession::connect(&target, Duration::from_secs(1))
            .await
            .expect_err("no key file");
        assert!(matches!(err, SftpError::Key(_)), "{err}");
        assert!(!err.is_retryable());
    }
}
