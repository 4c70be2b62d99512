//! `mhc-node demo`: a node with no configuration, serving a sample stream that ships inside the
//! binary, in a temporary data directory that is deleted on exit.

use std::fs;
use std::path::Path;

use anyhow::Context;
use http::Method;
use serde_json::json;

use crate::{admin, daemon};

/// The sample rendition (see `node/sample/make-sample.sh`): 8 s of H.264 + AAC in 2 s fMP4
/// segments, about 320 KB.
const SAMPLE_FILES: [(&str, &[u8]); 6] = [
    ("index.m3u8", include_bytes!("../sample/index.m3u8")),
    ("init.mp4", include_bytes!("../sample/init.mp4")),
    ("seg_000.m4s", include_bytes!("../sample/seg_000.m4s")),
    ("seg_001.m4s", include_bytes!("../sample/seg_001.m4s")),
    ("seg_002.m4s", include_bytes!("../sample/seg_002.m4s")),
    ("seg_003.m4s", include_bytes!("../sample/seg_003.m4s")),
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

/// Runs the demo until ctrl-c or SIGTERM.
///
/// # Errors
/// The node cannot start (e.g. the port is taken) or the sample cannot be ingested.
pub async fn run(http_port: u16) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("mhc-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let data_dir = dir.path().join("origin");
    let config_path = dir.path().join("origin.toml");
    let text = format!(
        "role = \"origin\"\n\
         data_dir = {data_dir:?}\n\
         region = \"local\"\n\
         location = {{ lat = 52.37, lon = 4.90 }}\n\
         [listen]\n\
         http = \"127.0.0.1:{http_port}\"\n\
         quic = \"127.0.0.1:0\"\n\
         p2p = \"/ip4/127.0.0.1/tcp/0\"\n\
         iroh = \"127.0.0.1:0\"\n\
         [cache]\n\
         memory_mb = 64\n\
         disk_gb = 1\n",
    );
    fs::write(&config_path, &text)?;
    let config = mhc_config::from_toml_str(&text, &config_path)?;
    let node = daemon::start(config).await?;

    let sample_dir = dir.path().join("sample");
    write_sample(&sample_dir)?;
    let answer = admin::call(
        &node.admin_socket,
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

    let http = node.state.http_addr;
    println!(
        "mhc demo: one origin node, data in {}",
        dir.path().display()
    );
    println!("peer id: {}", node.state.identity.peer_id());
    println!(
        "content: {} v{} ({} segments, manifest {})",
        SAMPLE_ID, answer["version"], answer["segments"], answer["manifest_hash"]
    );
    println!("admin socket: {}", node.admin_socket.display());
    println!(
        "playlist: http://127.0.0.1:{}/v1/content/{SAMPLE_ID}/index.m3u8",
        http.port()
    );
    println!(
        "try: ffmpeg -i http://127.0.0.1:{}/v1/content/{SAMPLE_ID}/index.m3u8 -c copy -f null -",
        http.port()
    );
    println!("ctrl-c to stop");

    crate::wait_for_signal().await;
    node.shutdown().await;
    drop(dir);
    Ok(())
}
