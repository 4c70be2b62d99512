//! The README's demo command, played by real clients: ffmpeg's HLS demuxer reads the stream to
//! the end, and hls.js in headless Chromium plays it from another origin (CORS).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mhc_tests::node_binary;

/// A running `mhc-node demo`, killed on drop.
struct Demo {
    child: Child,
    playlist: String,
}

impl Demo {
    fn start() -> Self {
        let mut child = Command::new(node_binary())
            .args(["demo", "--http-port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("playlist: ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let playlist = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo prints a `playlist:` line");
        Self { child, playlist }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ffmpeg_reads_the_demo_stream_to_the_end() {
    let demo = Demo::start();
    assert!(demo.playlist.starts_with("http://127.0.0.1:"));
    assert!(demo.playlist.ends_with("/v1/content/sample/index.m3u8"));
    let out = Command::new("timeout")
        .args(["60", "ffmpeg", "-v", "error", "-nostdin", "-i"])
        .arg(&demo.playlist)
        .args(["-map", "0", "-c", "copy", "-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed (apt-get install ffmpeg; scripts/install-test-deps does)");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hlsjs_in_chromium_plays_the_demo_stream_cross_origin() {
    let demo = Demo::start();
    mhc_tests::assert_plays_in_chromium(&demo.playlist, None);
}
