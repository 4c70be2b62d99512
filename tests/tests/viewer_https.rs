//! The viewer plane over HTTPS on a real origin, checked with curl, openssl and a test CA:
//! segments byte-identical to the source over HTTP/1.1 and HTTP/2 (ALPN), and a renewed
//! certificate reaches new connections while a response that started before goes on to its end.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mhc_tests::{assert_success, wait_until, Cluster, NodeOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority for the test: its PEM certificate, and what signs leaves.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mhc test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes a leaf for localhost and 127.0.0.1 named `cn`: the chain (leaf, CA) and its key.
    fn leaf(&self, cn: &str, cert: &Path, key: &Path) {
        let leaf_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        std::fs::write(cert, format!("{}{}", leaf.pem(), self.pem)).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn curl(args: &[&str]) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "30"])
        .args(args);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("running curl (apt-get install curl)")
}

/// The subject curl saw on a new connection to `url`.
fn subject_seen(ca: &Path, url: &str) -> String {
    let out = run(curl(&[
        "-v",
        "--cacert",
        ca.to_str().unwrap(),
        "-o",
        "/dev/null",
        url,
    ]));
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("subject: "))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn segments_over_https_are_the_same_bytes_and_a_renewed_certificate_is_picked_up() {
    let mut c = Cluster::new();
    let ca = TestCa::new();
    let ca_pem: PathBuf = c.path().join("ca.pem");
    std::fs::write(&ca_pem, &ca.pem).unwrap();
    let (cert, key) = (c.path().join("fullchain.pem"), c.path().join("privkey.pem"));
    ca.leaf("edge-one", &cert, &key);

    let o = c.start_with("origin", NodeOptions::new("origin").https(&cert, &key));
    let dir = c.path().join("song");
    mhc_tests::write_synthetic_rendition(&dir, 4, 512 * 1024, 3);
    assert_success(&c.node(o).ingest("song", &dir), "ingest");
    let https = c
        .node(o)
        .https
        .expect("runtime.json names the https address");
    let url = |i: usize| {
        format!(
            "https://localhost:{}/v1/content/song/seg/{i}.ts",
            https.port()
        )
    };
    let ca_arg = ca_pem.to_str().unwrap();

    // Both protocols by ALPN, verified against the test CA, byte-identical to the source.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out_file = c.path().join(format!("seg-{version}.ts"));
        let out = run(curl(&[
            flag,
            "--cacert",
            ca_arg,
            "-o",
            out_file.to_str().unwrap(),
            "-w",
            "%{http_code} %{http_version}",
            &url(1),
        ]));
        assert_success(&out, "curl over https");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("200 {version}")
        );
        assert_eq!(
            std::fs::read(&out_file).unwrap(),
            std::fs::read(dir.join("seg_001.ts")).unwrap()
        );
    }
    // Without the CA, curl refuses the certificate: it is checked, not just present.
    assert!(!run(curl(&["-o", "/dev/null", &url(0)])).status.success());
    assert!(subject_seen(&ca_pem, &url(0)).contains("edge-one"));

    // A connection made on the first certificate asks for a segment and reads nothing of the
    // answer until after the renewal...
    let mut old = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", https.port()),
        ])
        .args([
            "-servername",
            "localhost",
            "-CAfile",
            ca_arg,
            "-verify_return_error",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running openssl (apt-get install openssl)");
    let mut stdout = old.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("Verify return code: 0 (ok)") {
        let n = stdout.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "openssl s_client ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("CN = edge-one"));
    let mut stdin = old.stdin.take().unwrap();
    stdin
        .write_all(
            b"GET /v1/content/song/seg/2.ts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    // ... the certificate is renewed in place, as certbot does ...
    let renewal = c.path().join("renewal");
    std::fs::create_dir_all(&renewal).unwrap();
    ca.leaf(
        "edge-two",
        &renewal.join("cert.pem"),
        &renewal.join("key.pem"),
    );
    std::fs::copy(renewal.join("cert.pem"), &cert).unwrap();
    std::fs::copy(renewal.join("key.pem"), &key).unwrap();
    // ... new connections get the new one within the node's check period ...
    assert!(
        wait_until(Duration::from_secs(15), || subject_seen(&ca_pem, &url(0))
            .contains("edge-two")),
        "the renewed certificate was not picked up: {}",
        c.node(o).log_tail()
    );
    assert!(c.node(o).log_tail().contains("TLS certificate reloaded"));
    // ... and the old connection's response goes on to its end, whole.
    stdout.read_to_end(&mut seen).unwrap();
    drop(stdin);
    let _ = old.wait();
    let response_at = find(&seen, b"HTTP/1.1 200 OK\r\n").expect("a 200 on the old connection");
    let body_at = response_at + find(&seen[response_at..], b"\r\n\r\n").unwrap() + 4;
    let expected = std::fs::read(dir.join("seg_002.ts")).unwrap();
    // (s_client prints its own lines after the server closes.)
    assert!(
        seen[body_at..].starts_with(&expected),
        "the old response was cut or changed ({} bytes after its header, {} expected)",
        seen.len() - body_at,
        expected.len()
    );

    // The plain plane is unchanged.
    assert_eq!(c.node(o).get("/v1/content/song/seg/3.ts").status, 200);
}

/// Base64 of the SHA-256 of `cert`'s SubjectPublicKeyInfo (what Chromium's
/// `--ignore-certificate-errors-spki-list` names), by openssl.
fn spki_sha256_base64(cert: &Path) -> String {
    let out = run({
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(
                "openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der \
                 | openssl dgst -sha256 -binary | base64",
            )
            .arg("sh")
            .arg(cert);
        cmd
    });
    assert_success(&out, "openssl (apt-get install openssl)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn hlsjs_in_chromium_plays_and_verifies_over_https() {
    let mut c = Cluster::new();
    let ca = TestCa::new();
    let (cert, key) = (c.path().join("fullchain.pem"), c.path().join("privkey.pem"));
    ca.leaf("edge-one", &cert, &key);
    let o = c.start_with("origin", NodeOptions::new("origin").https(&cert, &key));
    let sample = c.path().join("sample");
    mhc_tests::copy_sample(&sample);
    assert_success(&c.node(o).ingest("sample", &sample), "ingest");
    let https = c.node(o).https.unwrap();
    let playlist = format!(
        "https://localhost:{}/v1/content/sample/index.m3u8",
        https.port()
    );
    mhc_tests::assert_plays_in_chromium(&playlist, Some(&spki_sha256_base64(&cert)));
}
