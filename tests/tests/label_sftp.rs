//! The label plugin's SFTP client ([`mhc_label::sftp::SftpSession`]) against a real OpenSSH
//! server ([`mhc_tests::sshd::Sshd`], an SFTP-only drop like a DSP's): uploads land whole and
//! only under their final name, the host key is checked exactly, RSA client keys work, and a
//! server killed mid-upload leaves no partial file behind.
//!
//! `throughput_vs_openssh` (ignored) compares upload speed with OpenSSH's `sftp`:
//! `cargo test -p mhc-tests --release --test label_sftp -- --ignored --nocapture`.

use std::fs;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use mhc_label::sftp::{SftpError, SftpSession, SftpTarget};
use mhc_tests::sshd::{keygen, Sshd};
use mhc_tests::{assert_success, wait_until};

/// Bound on each test; the slowest (the kill mid-upload) takes a few seconds.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn target(sshd: &Sshd, key: PathBuf) -> SftpTarget {
    SftpTarget {
        host: "127.0.0.1".into(),
        port: sshd.port(),
        user: sshd.user().into(),
        key,
        known_host: sshd.known_host(),
    }
}

/// `len` random bytes, the same for the same `seed`.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    data
}

/// The SFTP path of `rel` in the server's drop folder (an absolute path: no chroot).
fn remote(sshd: &Sshd, rel: &str) -> String {
    sshd.root()
        .join(rel)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

async fn bounded<T>(
    test: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .context("test timed out")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_lands_whole_under_its_final_name() -> anyhow::Result<()> {
    let sshd = Sshd::start();
    bounded(async {
        let sftp =
            SftpSession::connect(&target(&sshd, sshd.client_key_path()), CONNECT_TIMEOUT).await?;
        let dir = remote(&sshd, "batch/20250101/A1");
        sftp.mkdir_all(&dir).await?;
        sftp.mkdir_all(&dir)
            .await
            .context("existing folders are fine")?;

        let data = random_bytes(5_000_000, 1);
        let path = format!("{dir}/track.flac");
        let written = sftp
            .upload(Box::new(Cursor::new(data.clone())), &path)
            .await?;
        ensure!(written == data.len() as u64, "{written} bytes written");
        let on_disk = fs::read(sshd.root().join("batch/20250101/A1/track.flac"))?;
        ensure!(
            blake3::hash(&on_disk) == blake3::hash(&data),
            "content differs"
        );
        ensure!(
            sftp.list(&dir).await? == ["track.flac"],
            "no .part file remains"
        );
        ensure!(sftp.size_of(&path).await? == Some(5_000_000));
        ensure!(sftp.size_of(&format!("{dir}/none")).await?.is_none());

        // Replacing an existing file.
        let xml = b"<NewReleaseMessage/>".to_vec();
        let xml_path = format!("{dir}/release.xml");
        sftp.upload(Box::new(Cursor::new(b"old".to_vec())), &xml_path)
            .await?;
        sftp.upload(Box::new(Cursor::new(xml.clone())), &xml_path)
            .await?;
        ensure!(sftp.read_small(&xml_path, 1024).await? == xml);
        ensure!(
            sftp.read_small(&xml_path, xml.len()).await? == xml,
            "exactly max is fine"
        );
        let err = sftp
            .read_small(&path, 1_000_000)
            .await
            .expect_err("too large");
        ensure!(
            matches!(err, SftpError::TooLarge { .. }) && !err.is_retryable(),
            "{err}"
        );

        // An empty file.
        sftp.upload(
            Box::new(Cursor::new(Vec::new())),
            &format!("{dir}/BatchComplete"),
        )
        .await?;
        let mut names = sftp.list(&dir).await?;
        names.sort();
        ensure!(
            names == ["BatchComplete", "release.xml", "track.flac"],
            "{names:?}"
        );

        sftp.remove(&xml_path).await?;
        ensure!(sftp.size_of(&xml_path).await?.is_none());
        let err = sftp.remove(&xml_path).await.expect_err("already removed");
        ensure!(matches!(err, SftpError::Remote(_)), "{err}");
        sftp.close().await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused_before_anything_is_sent() -> anyhow::Result<()> {
    let sshd = Sshd::start();
    bounded(async {
        let other = keygen(&sshd.scratch().join("other_host"), "ed25519");
        let target = SftpTarget {
            known_host: other.clone(),
            ..target(&sshd, sshd.client_key_path())
        };
        let err = SftpSession::connect(&target, CONNECT_TIMEOUT)
            .await
            .expect_err("a mismatch");
        match &err {
            SftpError::HostKeyMismatch { expected, offered } => {
                ensure!(*expected == other, "{expected}");
                ensure!(*offered == sshd.known_host(), "{offered}");
            }
            other => anyhow::bail!("not a mismatch: {other}"),
        }
        ensure!(!err.is_retryable());
        ensure!(
            fs::read_dir(sshd.root())?.next().is_none(),
            "nothing created"
        );
        ensure!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_client_key_works() -> anyhow::Result<()> {
    let sshd = Sshd::start();
    bounded(async {
        let sftp =
            SftpSession::connect(&target(&sshd, sshd.rsa_client_key_path()), CONNECT_TIMEOUT)
                .await?;
        let data = random_bytes(100_000, 2);
        sftp.upload(
            Box::new(Cursor::new(data.clone())),
            &remote(&sshd, "rsa.bin"),
        )
        .await?;
        ensure!(fs::read(sshd.root().join("rsa.bin"))? == data);
        sftp.close().await?;
        // OpenSSH refuses SHA-1 RSA signatures: the login used rsa-sha2-256 or -512.
        ensure!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
        Ok(())
    })
    .await
}

/// ring's AES-GCM and the pure-Rust AES-CTR with HMAC also work (not only the default
/// chacha20-poly1305), and so does a server that offers only curve25519-sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_ciphers_work() -> anyhow::Result<()> {
    for cipher in [
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
    ] {
        let sshd = Sshd::start_with_config(&format!(
            "Ciphers {cipher}\nKexAlgorithms curve25519-sha256\nLogLevel DEBUG1"
        ));
        bounded(async {
            let target = target(&sshd, sshd.client_key_path());
            let sftp = SftpSession::connect(&target, CONNECT_TIMEOUT).await?;
            let data = random_bytes(1_000_000, 6);
            let path = remote(&sshd, "x.bin");
            sftp.upload(Box::new(Cursor::new(data.clone())), &path)
                .await?;
            ensure!(fs::read(sshd.root().join("x.bin"))? == data, "{cipher}");
            sftp.close().await?;
            let expected = format!("kex: client->server cipher: {cipher}");
            ensure!(sshd.log().contains(&expected), "{}", sshd.log());
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// A server with an RSA and an ed25519 host key, configured with the RSA one: we ask for
/// that one (as OpenSSH does for a host in known_hosts) instead of failing on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_host_key_is_asked_for() -> anyhow::Result<()> {
    let keys = tempfile::tempdir()?;
    let rsa_host = keys.path().join("host_rsa");
    let known_host = keygen(&rsa_host, "rsa");
    let sshd = Sshd::start_with_config(&format!("HostKey {}", rsa_host.display()));
    bounded(async {
        let target = SftpTarget {
            known_host: known_host.clone(),
            ..target(&sshd, sshd.client_key_path())
        };
        let sftp = SftpSession::connect(&target, CONNECT_TIMEOUT).await?;
        sftp.mkdir_all(&remote(&sshd, "a")).await?;
        sftp.close().await?;
        ensure!(sshd.root().join("a").is_dir());
        Ok(())
    })
    .await
}

/// An endless source of pseudo-random bytes, produced as they are read.
struct Endless(fastrand::Rng);

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.fill(buf);
        Ok(buf.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_upload_leaves_no_partial_file() -> anyhow::Result<()> {
    let mut sshd = Sshd::start();
    let final_path = sshd.root().join("big.wav");
    let part = sshd.root().join(".big.wav.part");
    let target = target(&sshd, sshd.client_key_path());
    let sftp = bounded(async { Ok(SftpSession::connect(&target, CONNECT_TIMEOUT).await?) }).await?;
    let upload = {
        let path = remote(&sshd, "big.wav");
        let reader = Endless(fastrand::Rng::with_seed(3)).take(1 << 40);
        tokio::spawn(async move { sftp.upload(Box::new(reader), &path).await })
    };
    // Some bytes went out (they are on the server's disk); then the server dies.
    let started = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(30), || {
            fs::metadata(&part).is_ok_and(|m| m.len() > 4_000_000)
        })
    })
    .await?;
    ensure!(started, "the upload did not start");
    let killed = Instant::now();
    sshd.stop();
    let err = bounded(async { Ok(upload.await?) })
        .await?
        .expect_err("the upload fails");
    println!("upload failed {:?} after the kill: {err}", killed.elapsed());
    ensure!(err.is_retryable(), "{err}");

    sshd.restart();
    ensure!(!final_path.exists(), "a partial file under the final name");
    bounded(async {
        let sftp = SftpSession::connect(&target, CONNECT_TIMEOUT).await?;
        let data = random_bytes(5_000_000, 4);
        sftp.upload(
            Box::new(Cursor::new(data.clone())),
            &remote(&sshd, "big.wav"),
        )
        .await?;
        ensure!(blake3::hash(&fs::read(&final_path)?) == blake3::hash(&data));
        sftp.close().await?;
        Ok(())
    })
    .await
}

/// Writes `len` seeded random bytes to `path`, a megabyte at a time.
fn write_random_file(path: &Path, len: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut file = std::io::BufWriter::new(fs::File::create(path)?);
    let mut block = vec![0; 1 << 20];
    for _ in 0..len.div_ceil(block.len()) {
        rng.fill(&mut block);
        file.write_all(&block)?;
    }
    Ok(file.into_inner()?.sync_all()?)
}

/// `VmHWM` of this process (Linux): the most resident memory it ever had.
fn peak_memory() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    line.unwrap_or("?").trim().to_owned()
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

/// Uploads the same 500 MB file with `SftpSession::upload` and with OpenSSH's `sftp` (`put`),
/// to the same sshd, twice each, and prints MB/s and the ratio of the best runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by name with --release --ignored --nocapture"]
async fn throughput_vs_openssh() -> anyhow::Result<()> {
    const LEN: usize = 500 * 1024 * 1024;
    // DEBUG1 logs the negotiated algorithms.
    let sshd = Sshd::start_with_config("LogLevel DEBUG1");
    let source = sshd.scratch().join("source.bin");
    write_random_file(&source, LEN, 5)?;
    let target = target(&sshd, sshd.client_key_path());
    let known_hosts = sshd.known_hosts_file();
    let (mut best_russh, mut best_openssh) = (0f64, 0f64);
    for round in 0..2 {
        let sftp = SftpSession::connect(&target, CONNECT_TIMEOUT).await?;
        let start = Instant::now();
        let written = sftp
            .upload(
                Box::new(fs::File::open(&source)?),
                &remote(&sshd, "russh.bin"),
            )
            .await?;
        let russh = mb_per_s(written, start.elapsed());
        sftp.close().await?;
        println!("peak memory of the test so far: {}", peak_memory());
        ensure!(written == LEN as u64);

        let batch = sshd.scratch().join("batch");
        fs::write(
            &batch,
            format!(
                "put {} {}\n",
                source.display(),
                remote(&sshd, "openssh.bin")
            ),
        )?;
        let start = Instant::now();
        let out = Command::new("sftp")
            .arg("-b")
            .arg(&batch)
            .arg("-i")
            .arg(sshd.client_key_path())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-P",
            ])
            .arg(sshd.port().to_string())
            .arg(format!("{}@127.0.0.1", sshd.user()))
            .output()?;
        let took = start.elapsed();
        assert_success(&out, "sftp put");
        let openssh = mb_per_s(LEN as u64, took);
        ensure!(fs::metadata(sshd.root().join("openssh.bin"))?.len() == LEN as u64);
        println!("round {round}: russh {russh:.0} MB/s, OpenSSH sftp {openssh:.0} MB/s");
        best_russh = best_russh.max(russh);
        best_openssh = best_openssh.max(openssh);
        fs::remove_file(sshd.root().join("russh.bin"))?;
        fs::remove_file(sshd.root().join("openssh.bin"))?;
    }
    let log = sshd.log();
    let negotiated = |l: &&str| l.contains("kex: algorithm") || l.contains("kex: client->server");
    for line in log.lines().filter(negotiated) {
        println!("sshd {line}");
    }
    println!(
        "best of 2, {} MB: russh {best_russh:.0} MB/s, OpenSSH sftp {best_openssh:.0} MB/s, \
         ratio {:.2}",
        LEN / 1_000_000,
        best_russh / best_openssh
    );
    Ok(())
}
