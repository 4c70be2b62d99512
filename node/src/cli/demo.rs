//! `mhc-node demo`: a node with no configuration, serving a sample stream that ships inside the
//! binary, in a temporary data directory that is deleted on exit.

use std::fs;
use std::path::Path;

use anyhow::Context;
use http::Method;
use serde_json::json;

use mhc_transport::gossip::cert::{Area, NodeCertificate, SignedCertificate};

use super::client::call;
use super::{print_status, wait_for_signal};
use crate::core::enrollment::NODE_CERT_FILE;
use crate::core::identity::Identity;
use crate::node::Node;
use crate::role::wire_role;

/// The sample rendition (see `node/sample/make-sample.sh`): 8 s of H.264 + AAC in 2 s fMP4
/// segments, about 320 KB.
const SAMPLE_FILES: [(&str, &[u8]); 6] = [
    ("index.m3u8", include_bytes!("../../sample/index.m3u8")),
    ("init.mp4", include_bytes!("../../sample/init.mp4")),
    ("seg_000.m4s", include_bytes!("../../sample/seg_000.m4s")),
    ("seg_001.m4s", include_bytes!("../../sample/seg_001.m4s")),
    ("seg_002.m4s", include_bytes!("../../sample/seg_002.m4s")),
    ("seg_003.m4s", include_bytes!("../../sample/seg_003.m4s")),
];

/// Content id of the sample.
pub const SAMPLE_ID: &str = "sample";

/// Writes the embedded sample rendition into `dir`.
///
/// # Errors
/// The files cannot be written.
pub fn write_sample(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in SAMPLE_FILES {
        fs::write(dir.join(name), bytes).with_context(|| format!("writing sample {name}"))?;
    }
    Ok(())
}

/// The demo's config for one node: loopback only, OS-chosen ports except the origin's viewer
/// port, one-second heartbeats; enrolled by the demo's own operator key.
fn node_config(
    dir: &Path,
    name: &str,
    role: &str,
    http_port: u16,
    bootstrap: &[String],
    publishers: &[String],
    operator: &Identity,
) -> anyhow::Result<mhc_config::Config> {
    let data_dir = dir.join(name);
    let config_path = dir.join(format!("{name}.toml"));
    let bootstrap: Vec<String> = bootstrap.iter().map(|b| format!("{b:?}")).collect();
    let publishers: Vec<String> = publishers.iter().map(|p| format!("{p:?}")).collect();
    let text = format!(
        "role = \"{role}\"\n\
         data_dir = {data_dir:?}\n\
         region = \"local\"\n\
         location = {{ lat = 52.37, lon = 4.90 }}\n\
         [listen]\n\
         http = \"127.0.0.1:{http_port}\"\n\
         quic = \"127.0.0.1:0\"\n\
         p2p = \"/ip4/127.0.0.1/tcp/0\"\n\
         iroh = \"127.0.0.1:0\"\n\
         swim = \"127.0.0.1:0\"\n\
         [cluster]\n\
         bootstrap = [{}]\n\
         [trust]\n\
         publishers = [{}]\n\
         operators = [\"{}\"]\n\
         [cache]\n\
         memory_mb = 64\n\
         disk_gb = 1\n",
        bootstrap.join(", "),
        publishers.join(", "),
        operator.public_key_hex()
    );
    fs::write(&config_path, &text)?;
    let config = mhc_config::from_toml_str(&text, &config_path)?;
    enroll(&config, operator)?;
    Ok(config)
}

/// Gives the demo node of `config` its key and a certificate from the demo's operator, for its
/// role in region `local`, within 50 km of its location, viewers on 127.0.0.1, for a day.
fn enroll(config: &mhc_config::Config, operator: &Identity) -> anyhow::Result<()> {
    fs::create_dir_all(&config.data_dir)?;
    let node = Identity::load_or_create(&config.data_dir)?;
    let now = mhc_clock::Clock::system().now_ms();
    let certificate = NodeCertificate {
        node: node.public_key(),
        role: wire_role(config.role),
        region: config.region.clone(),
        area: config.location.as_ref().map(|l| Area {
            lat: l.lat,
            lon: l.lon,
            radius_km: 50.0,
        }),
        http: vec!["127.0.0.1".into()],
        not_before_ms: now.saturating_sub(60_000),
        not_after_ms: now + 86_400_000,
        serial: now,
        operator: [0; 32],
    };
    let signed = SignedCertificate::sign(certificate, operator.signing_key());
    fs::write(config.data_dir.join(NODE_CERT_FILE), signed.encode())?;
    Ok(())
}

/// Runs the demo until ctrl-c or SIGTERM: an origin serving the sample, two edges that join it
/// over the control plane and fill from it over QUIC (edge 1 serves viewers on `http_port`), and
/// two mesh nodes that pin the sample and replicate it over iroh-blobs.
///
/// # Errors
/// A node cannot start (e.g. the port is taken) or the sample cannot be ingested.
pub async fn run(http_port: u16) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("mhc-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    // The demo is its own operator: it enrolls every node it starts.
    let operator = Identity::generate()?;
    let origin = Node::start(node_config(
        dir.path(),
        "origin",
        "origin",
        0,
        &[],
        &[],
        &operator,
    )?)
    .await?;
    // The edges trust what the origin signs and find it (their parent) through the membership
    // table: no upstream configuration.
    let trusted = [origin.public_key_hex()];
    let mut edges = Vec::new();
    for (name, port) in [("edge-1", http_port), ("edge-2", 0)] {
        let config = node_config(
            dir.path(),
            name,
            "edge",
            port,
            origin.p2p_addrs(),
            &trusted,
            &operator,
        )?;
        edges.push(Node::start(config).await?);
    }
    let mut meshes = Vec::new();
    for name in ["mesh-1", "mesh-2"] {
        let config = node_config(
            dir.path(),
            name,
            "mesh",
            0,
            origin.p2p_addrs(),
            &trusted,
            &operator,
        )?;
        let node = Node::start(config).await?;
        node.pin(&SAMPLE_ID.parse()?)?;
        meshes.push(node);
    }

    let sample_dir = dir.path().join("sample");
    write_sample(&sample_dir)?;
    let answer = call(
        origin.admin_socket(),
        Method::POST,
        "/admin/ingest",
        Some(json!({
            "content_id": SAMPLE_ID,
            "title": "mhc sample: test pattern and 440 Hz tone",
            "artist_id": "mhc-demo",
            "media_kind": "video",
            "codecs": "avc1.64001e,mp4a.40.2",
            "source": sample_dir,
        })),
    )
    .await
    .context("ingesting the sample stream")?;

    // Wait (briefly) until the origin sees every node and the mesh nodes hold their replicas,
    // so the table below shows the cluster.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let replicated = || meshes.iter().all(|m| m.holds_on_mesh(SAMPLE_ID));
    while (origin.alive_members() < edges.len() + meshes.len() || !replicated())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let status = call(origin.admin_socket(), Method::GET, "/admin/status", None).await?;

    let port = edges[0].http_addr().port();
    println!(
        "mhc demo: an origin, two edges and two mesh nodes on loopback, data in {}",
        dir.path().display()
    );
    print_status(&status);
    println!();
    println!(
        "content: {} v{} ({} segments, manifest {})",
        SAMPLE_ID,
        answer["version"],
        answer["segments"],
        answer["manifest_hash"].as_str().unwrap_or("?")
    );
    println!(
        "status: mhc-node status --admin-socket {}",
        origin.admin_socket().display()
    );
    println!(
        "origin: http://{}/v1/content/{SAMPLE_ID}/index.m3u8",
        origin.http_addr()
    );
    println!("edge-1 fills from the origin over QUIC and serves the playlist below:");
    println!("playlist: http://127.0.0.1:{port}/v1/content/{SAMPLE_ID}/index.m3u8");
    println!("try: ffmpeg -i http://127.0.0.1:{port}/v1/content/{SAMPLE_ID}/index.m3u8 -c copy -f null -");
    for m in &meshes {
        println!(
            "{}: replicated over the mesh: http://{}/v1/content/{SAMPLE_ID}/index.m3u8",
            m.data_dir()
                .file_name()
                .map_or("mesh".into(), |n| n.to_string_lossy()),
            m.http_addr()
        );
    }
    println!("ctrl-c to stop");

    wait_for_signal().await;
    for node in edges.into_iter().chain(meshes) {
        node.shutdown().await;
    }
    origin.shutdown().await;
    drop(dir);
    Ok(())
}
