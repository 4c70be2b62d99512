//! A real OpenSSH server (Debian's `openssh-server`) for one test: an SFTP-only drop like a
//! DSP's, on a free loopback port, with its keys, config and files in a temporary folder;
//! killed and removed on drop.
//!
//! It runs as the current user (root in CI) with `ForceCommand internal-sftp` and no chroot:
//! tests give absolute paths into [`Sshd::root`] and read the results straight from disk.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// sshd insists on being started by its absolute path (it re-executes itself).
const SSHD: &str = "/usr/sbin/sshd";
/// How long sshd gets to listen after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One running sshd.
#[derive(Debug)]
pub struct Sshd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    /// Config lines before ours.
    extra: String,
}

/// Runs `ssh-keygen` to make an unencrypted key pair at `path` and `path.pub`; `kind` is
/// `ed25519` or `rsa`. Returns the public key line without its comment (`ssh-ed25519 AAAA...`).
pub fn keygen(path: &Path, kind: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "", "-t", kind, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen is installed (apt-get install openssh-client)");
    crate::assert_success(&out, "ssh-keygen");
    public_key_line(Path::new(&format!("{}.pub", path.display())))
}

/// The first two fields (type and base64 key) of an OpenSSH public key file.
fn public_key_line(pub_file: &Path) -> String {
    let text = fs::read_to_string(pub_file).expect("public key file");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sshd {
    /// Makes host and client keys (ed25519), writes the config and starts sshd; waits until
    /// it accepts connections.
    ///
    /// # Panics
    /// sshd is not installed or does not start (its log is in the message).
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// [`Sshd::start`] with `extra` lines of `sshd_config` (e.g. `Ciphers aes256-ctr`). They
    /// come first, and sshd keeps the first value of each keyword, so they override ours.
    ///
    /// # Panics
    /// As [`Sshd::start`].
    pub fn start_with_config(extra: &str) -> Self {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is not installed (apt-get install openssh-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("mhc-sshd-")
            .tempdir()
            .expect("sshd folder");
        let user = current_user();
        keygen(&dir.path().join("host_ed25519"), "ed25519");
        keygen(&dir.path().join("client_ed25519"), "ed25519");
        fs::copy(
            dir.path().join("client_ed25519.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        fs::create_dir(dir.path().join("root")).expect("sftp root folder");
        if user == "root" {
            // Privilege separation wants its empty folder (systemd makes it on real hosts).
            fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        let mut sshd = Sshd {
            child: None,
            dir,
            port: 0,
            user,
            extra: extra.to_owned(),
        };
        // Another process may take the port between our probe and sshd's bind: retry.
        for _ in 0..3 {
            sshd.port = crate::free_port();
            if sshd.spawn() {
                return sshd;
            }
        }
        panic!("sshd did not start; log:\n{}", sshd.log());
    }

    /// Writes the config for the current port and starts sshd; whether it listens.
    fn spawn(&mut self) -> bool {
        let d = self.dir.path();
        let config = format!(
            "{extra}\n\
             ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             UsePAM no\n\
             StrictModes no\n\
             UseDNS no\n\
             AllowUsers {user}\n\
             PermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\n\
             ForceCommand internal-sftp\n\
             LogLevel VERBOSE\n",
            port = self.port,
            d = d.display(),
            user = self.user,
            extra = self.extra,
        );
        fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sshd");
        let port = self.port;
        let mut exited = false;
        let listening = wait_until(START_TIMEOUT, || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            exited || TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        self.child = Some(child);
        if listening && !exited {
            return true;
        }
        self.stop();
        false
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user SFTP logs in as (the one running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The authorized ed25519 client private key.
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// An authorized RSA client private key (made and authorized on first call).
    pub fn rsa_client_key_path(&self) -> PathBuf {
        let path = self.dir.path().join("client_rsa");
        if !path.exists() {
            let line = keygen(&path, "rsa");
            // sshd reads authorized_keys at each login: no restart needed.
            let keys = self.dir.path().join("authorized_keys");
            let mut text = fs::read_to_string(&keys).expect("authorized_keys");
            text.push_str(&line);
            text.push('\n');
            fs::write(&keys, text).expect("authorized_keys");
        }
        path
    }

    /// The server's host key as in `known_hosts` after the host name: `ssh-ed25519 AAAA...`.
    pub fn known_host(&self) -> String {
        public_key_line(&self.dir.path().join("host_ed25519.pub"))
    }

    /// A `known_hosts` file for OpenSSH's own clients (`-o UserKnownHostsFile=`).
    pub fn known_hosts_file(&self) -> PathBuf {
        let path = self.dir.path().join("known_hosts");
        let line = format!("[127.0.0.1]:{} {}\n", self.port, self.known_host());
        fs::write(&path, line).expect("known_hosts");
        path
    }

    /// The folder the SFTP user writes into (SFTP paths are absolute paths into it).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A scratch folder next to the server's files, for a test's own files.
    pub fn scratch(&self) -> PathBuf {
        let path = self.dir.path().join("scratch");
        fs::create_dir_all(&path).expect("scratch folder");
        path
    }

    /// Kills sshd (SIGKILL) and every session process it forked (they call `setsid`, so
    /// killing the listener alone would leave running transfers alive): clients see their
    /// connections drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut pids = descendants(child.id());
        pids.push(child.id());
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts sshd again, on the same port with the same keys (after [`Sshd::stop`]).
    ///
    /// # Panics
    /// sshd does not start again.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "sshd did not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// sshd's log (`LogLevel VERBOSE` unless the extra config says otherwise).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `id -un`.
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("running id");
    crate::assert_success(&out, "id -un");
    String::from_utf8(out.stdout)
        .expect("utf-8 user name")
        .trim()
        .to_owned()
}

/// Every process below `pid` (children, grandchildren, ...), from `/proc/<pid>/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent of `pid`: the field after the `(comm)` of `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}
