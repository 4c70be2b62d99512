//! Test harness for end-to-end tests: real `mhc-node` processes on loopback sockets.
//!
//! - [`Cluster`] owns a temporary folder and the nodes started in it; dropping it kills every
//!   node (SIGKILL) and deletes the folder, so a failing test leaves nothing behind.
//! - [`NodeProcess`] is one node: its config, data directory, log, addresses, and helpers to
//!   query it over HTTP ([`NodeProcess::get`]) and to run its CLI ([`NodeProcess::cli`]).
//! - [`http_request`] is a deliberately small HTTP/1.1 client over a `TcpStream`, so tests see
//!   exactly the bytes and headers a player would.
//!
//! The binary is `target/<profile>/mhc-node` next to the test executable (cargo builds it for
//! `cargo test --workspace`), or `$MHC_NODE_BIN`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use mhc_transport::gossip::cert::{Area, NodeCertificate, SignedCertificate};
use mhc_transport::gossip::messages::WireRole;

/// How long a node gets to write its runtime file after being started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Socket timeouts of the test client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `mhc-node` binary under test.
pub fn node_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MHC_NODE_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test binary> or target/<profile>/<bench binary>
    // → target/<profile>/mhc-node
    let exe = std::env::current_exe().expect("test executable path");
    let mut profile_dir = exe.parent().expect("executable has a folder");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("deps has a parent");
    }
    let bin = profile_dir.join("mhc-node");
    assert!(
        bin.is_file(),
        "{} not found: build it first (`cargo build -p mhc-node`, or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// The program `name` on the PATH, which Debian's `package` installs (`.ci/run` does); panics
/// with that advice when it is missing.
pub fn installed_program(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is not installed (`.ci/run` installs Debian's {package} package)")
    })
}

/// A loopback port that was free a moment ago, for a server that must be told its port
/// (etcd, sshd, Ceph): it may be taken again before the server binds it, a small window.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The sample rendition shipped with the project (fMP4, 4 segments).
pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/sample")
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How to start a node: role, control-plane settings, extra config, where it runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Role.
    pub role: String,
    /// `cluster.heartbeat_interval_ms`.
    pub heartbeat_ms: u64,
    /// `cluster.suspect_after_missed`.
    pub suspect_after: u32,
    /// `cluster.dead_after_missed`.
    pub dead_after: u32,
    /// `cluster.bootstrap` multiaddrs.
    pub bootstrap: Vec<String>,
    /// Extra TOML appended to the config (other tables).
    pub extra_toml: String,
    /// Network namespace to run in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// IP address every plane listens on (p2p, QUIC, viewer, mesh).
    pub p2p_ip: String,
    /// Top-level `region` (default `"test"`).
    pub region: String,
    /// Top-level `location = { lat, lon }`, if any.
    pub location: Option<(f64, f64)>,
    /// Whether the cluster's operator enrolls the node before its first start (a certificate
    /// for its role, region and place, viewer hosts 127.0.0.1 and its p2p address); default
    /// yes.
    pub enroll: bool,
    /// The viewer plane over TLS with this PEM chain and key (`listen.https` on a free
    /// loopback port), if any.
    pub https: Option<(PathBuf, PathBuf)>,
    /// Environment variables of the node's process and of the CLI run against it.
    pub env: Vec<(String, String)>,
}

impl NodeOptions {
    /// Defaults for `role`: 300 ms heartbeats, suspect after 3, dead after 6, loopback.
    pub fn new(role: &str) -> Self {
        Self {
            role: role.to_owned(),
            heartbeat_ms: 300,
            suspect_after: 3,
            dead_after: 6,
            bootstrap: Vec::new(),
            extra_toml: String::new(),
            netns: None,
            p2p_ip: "127.0.0.1".into(),
            region: "test".into(),
            location: None,
            enroll: true,
            https: None,
            env: Vec::new(),
        }
    }

    /// Sets `name` to `value` in the node's environment (and its CLI's).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the node without a certificate: no member admits it.
    pub fn unenrolled(mut self) -> Self {
        self.enroll = false;
        self
    }

    /// Places the node: top-level `region` and `location` (written before any table, where
    /// TOML wants top-level keys; `extra` cannot set them).
    pub fn placed(mut self, region: &str, lat: f64, lon: f64) -> Self {
        self.region = region.to_owned();
        self.location = Some((lat, lon));
        self
    }

    /// Bootstraps from these multiaddrs.
    pub fn bootstrap(mut self, addrs: &[String]) -> Self {
        self.bootstrap = addrs.to_vec();
        self
    }

    /// Appends TOML tables.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Serves the viewer plane over TLS too, with the PEM chain `cert` and key `key`
    /// (`listen.https` on a free loopback port and `http.tls_cert`/`tls_key`; `extra` must
    /// then not add an `[http]` table of its own).
    pub fn https(mut self, cert: &Path, key: &Path) -> Self {
        self.https = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// Runs in a network namespace, every plane on `ip`.
    pub fn in_netns(mut self, netns: &str, ip: &str) -> Self {
        self.netns = Some(netns.to_owned());
        self.p2p_ip = ip.to_owned();
        self
    }

    /// Listens on `ip` (every plane) in the test's own namespace: an address of a link to
    /// namespaces the test made.
    pub fn on_ip(mut self, ip: &str) -> Self {
        self.p2p_ip = ip.to_owned();
        self
    }

    /// Sets the heartbeat period.
    pub fn heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat_ms = ms;
        self
    }
}

/// A temporary folder with the nodes of one test.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The nodes, in start order.
    pub nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// An empty cluster in a fresh temporary folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("mhc-test-")
                .tempdir()
                .expect("temporary folder"),
            nodes: Vec::new(),
        }
    }

    /// The cluster's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a node named `name` with `role`; `extra_toml` is appended to the generated config
    /// (tables such as `[cache]` or `[trust]`). Returns its index in [`Cluster::nodes`].
    pub fn start(&mut self, name: &str, role: &str, extra_toml: &str) -> usize {
        self.start_with(name, NodeOptions::new(role).extra(extra_toml))
    }

    /// The cluster's operator key: it enrolls the nodes, and every node trusts it.
    pub fn operator(&self) -> SigningKey {
        cluster_operator(self.dir.path())
    }

    /// The cluster's operator key as a key file (`--key` of `mhc-node enroll`, `revoke`,
    /// `emergency`), written on first use.
    pub fn operator_key_file(&self) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join("operator.key");
        if !path.exists() {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(&self.operator().to_bytes()))
                .expect("writing the operator key");
        }
        path
    }

    /// An encoded certificate from the cluster's operator for the node key of `seed`, in
    /// `role` and region `test`: what an enrolled process that is not an mhc-node (a test's
    /// own QUIC peer) presents in its hello.
    pub fn certificate(&self, seed: [u8; 32], role: &str) -> Vec<u8> {
        SignedCertificate::sign(day_certificate(&seed, role, "test"), &self.operator()).encode()
    }

    /// Starts a node with full options. Returns its index.
    pub fn start_with(&mut self, name: &str, opts: NodeOptions) -> usize {
        let mut node = NodeProcess::configure(self.dir.path(), name, opts);
        node.spawn();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node at `i`.
    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }

    /// The node at `i`, mutably (to kill or restart it).
    pub fn node_mut(&mut self, i: usize) -> &mut NodeProcess {
        &mut self.nodes[i]
    }

    /// Whether every node but `skip` sees exactly `alive` other members alive.
    pub fn all_see_alive(&self, skip: Option<usize>, alive: usize) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .all(|(_, n)| n.alive_members() == alive)
    }

    /// Whether every node but `skip` lists `peer` in `state` (`alive`, `suspect`, `dead`).
    pub fn all_list(&self, skip: usize, peer: &str, state: &str) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .all(|(_, n)| n.member_state(peer).as_deref() == Some(state))
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

/// One `mhc-node` process and its files.
#[derive(Debug)]
pub struct NodeProcess {
    /// Name given by the test.
    pub name: String,
    /// Its configuration file.
    pub config_path: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its stderr log.
    pub log_path: PathBuf,
    /// Viewer-plane address, known once started.
    pub http: Option<SocketAddr>,
    /// Viewer plane over TLS, if configured, known once started.
    pub https: Option<SocketAddr>,
    /// Peer id, known once started.
    pub peer_id: Option<String>,
    /// libp2p addresses with `/p2p/<id>`, known once started.
    pub p2p: Vec<String>,
    /// QUIC data-plane address, known once started.
    pub quic: Option<SocketAddr>,
    /// ed25519 public key (hex), known once started.
    pub public_key: Option<String>,
    /// Options it was configured with.
    pub options: NodeOptions,
    child: Option<Child>,
}

impl NodeProcess {
    fn configure(root: &Path, name: &str, opts: NodeOptions) -> Self {
        let data_dir = root.join(name);
        let config_path = root.join(format!("{name}.toml"));
        if opts.enroll {
            enroll(root, &data_dir, &opts);
        }
        let node = Self {
            name: name.to_owned(),
            log_path: root.join(format!("{name}.log")),
            config_path,
            data_dir,
            http: None,
            https: None,
            peer_id: None,
            p2p: Vec::new(),
            quic: None,
            public_key: None,
            options: opts,
            child: None,
        };
        node.write_config();
        node
    }

    /// (Re)writes the config file from [`NodeProcess::options`]: the cluster's operator joins
    /// `trust.operators` (with any operator keys the test's own `[trust]` table lists).
    pub fn write_config(&self) {
        let o = &self.options;
        let root = self
            .config_path
            .parent()
            .expect("config in the cluster folder");
        let extra = with_operator(
            &o.extra_toml,
            &hex::encode(cluster_operator(root).verifying_key().as_bytes()),
        );
        let bootstrap: Vec<String> = o.bootstrap.iter().map(|b| format!("{b:?}")).collect();
        let config = format!(
            "role = \"{}\"\n\
             data_dir = {:?}\n\
             region = {:?}\n\
             {}\
             [listen]\n\
             http = \"{ip}:0\"\n\
             quic = \"{ip}:0\"\n\
             p2p = \"/ip4/{ip}/tcp/0\"\n\
             iroh = \"{ip}:0\"\n\
             swim = \"{ip}:0\"\n\
             {}\
             [cluster]\n\
             heartbeat_interval_ms = {}\n\
             suspect_after_missed = {}\n\
             dead_after_missed = {}\n\
             bootstrap = [{}]\n\
             {}\n",
            o.role,
            self.data_dir,
            o.region,
            o.location
                .map(|(lat, lon)| format!("location = {{ lat = {lat:?}, lon = {lon:?} }}\n"))
                .unwrap_or_default(),
            o.https
                .as_ref()
                .map(|_| "https = \"127.0.0.1:0\"\n")
                .unwrap_or_default(),
            o.heartbeat_ms,
            o.suspect_after,
            o.dead_after,
            bootstrap.join(", "),
            extra,
            ip = o.p2p_ip,
        );
        let config = match &o.https {
            Some((cert, key)) => {
                format!("{config}[http]\ntls_cert = {cert:?}\ntls_key = {key:?}\n")
            }
            None => config,
        };
        fs::write(&self.config_path, config).expect("writing node config");
    }

    /// The heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.options.heartbeat_ms)
    }

    /// Starts the process and waits until it has written `runtime.json`.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let runtime = self.data_dir.join("runtime.json");
        let _ = fs::remove_file(&runtime);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("node log file");
        let mut command = match &self.options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(node_binary());
                c
            }
            None => Command::new(node_binary()),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting mhc-node");
        self.child = Some(child);
        let started = wait_until(START_TIMEOUT, || {
            fs::read(&runtime)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| {
                    self.http = v["http"].as_str().and_then(|a| a.parse().ok());
                    self.https = v["https"].as_str().and_then(|a| a.parse().ok());
                    self.peer_id = v["peer_id"].as_str().map(str::to_owned);
                    self.quic = v["quic"].as_str().and_then(|a| a.parse().ok());
                    self.public_key = v["public_key"].as_str().map(str::to_owned);
                    self.p2p = v["p2p"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.http.is_some()
                })
                || self.exited()
        });
        assert!(
            started && !self.exited(),
            "node {} did not start; log:\n{}",
            self.name,
            self.log_tail()
        );
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Kills the process with SIGKILL (no cleanup, as a crash).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it (graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last 60 lines of the node's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The node's view of the cluster (`mhc-node status --json` over the admin socket, which
    /// works from any network namespace), or `None` if it does not answer.
    pub fn cluster_view(&self) -> Option<serde_json::Value> {
        if self.options.netns.is_none() {
            // Same namespace: the viewer plane answers faster than spawning the CLI.
            let r = http_request(self.http?, "GET", "/v1/cluster", &[]).ok()?;
            return (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?;
        }
        let data_dir = self.data_dir.to_str()?.to_owned();
        let out = self.cli(&["status", "--json", "--data-dir", &data_dir]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// State (`alive`, `suspect`, `dead`) of `peer` in this node's table, if listed.
    pub fn member_state(&self, peer: &str) -> Option<String> {
        let view = self.cluster_view()?;
        view["members"]
            .as_array()?
            .iter()
            .find(|m| m["peer_id"] == peer)
            .and_then(|m| m["state"].as_str().map(str::to_owned))
    }

    /// Number of other members this node sees alive.
    pub fn alive_members(&self) -> usize {
        self.cluster_view()
            .and_then(|v| {
                v["members"]
                    .as_array()
                    .map(|a| a.iter().filter(|m| m["state"] == "alive").count())
            })
            .unwrap_or(0)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's resident set size in KiB (`VmRSS`); panics if it is not running.
    pub fn rss_kb(&self) -> u64 {
        let pid = self.pid().expect("the node is not running");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("reading /proc/PID/status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// This node as an `upstream.parents` entry: `peerid@quic-addr`.
    pub fn as_parent(&self) -> String {
        format!(
            "{}@{}",
            self.peer_id.as_deref().expect("node started"),
            self.quic.expect("node started")
        )
    }

    /// The viewer-plane address.
    pub fn addr(&self) -> SocketAddr {
        self.http.expect("node started")
    }

    /// `GET path` on the viewer plane.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// Any request on the viewer plane.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(self.addr(), method, path, headers)
            .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", self.name))
    }

    /// Runs `mhc-node <args>` against this node (the admin socket found through `--data-dir`
    /// where the command takes it).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(node_binary())
            .args(args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running mhc-node CLI")
    }

    /// `mhc-node ingest` of `dir` as `id` at this node, by `artist-1`.
    pub fn ingest(&self, id: &str, dir: &Path) -> Output {
        self.ingest_as(id, &format!("Title of {id}"), "artist-1", dir)
    }

    /// `mhc-node ingest` of `dir` as `id` at this node, with its title and artist.
    pub fn ingest_as(&self, id: &str, title: &str, artist: &str, dir: &Path) -> Output {
        let data_dir = self.data_dir.to_str().expect("utf-8 path").to_owned();
        let dir = dir.to_str().expect("utf-8 path").to_owned();
        self.cli(&[
            "ingest",
            "--data-dir",
            &data_dir,
            "--content-id",
            id,
            "--title",
            title,
            "--artist",
            artist,
            &dir,
        ])
    }

    /// `artist`'s earned minor units in this origin's royalty books, through `mhc-node plugin`
    /// on its admin socket (0 before any credit; -1 when the books cannot be read there now).
    pub fn royalty_earned(&self, artist: &str) -> i64 {
        let data_dir = self.data_dir.to_str().expect("utf-8 path").to_owned();
        let out = self.cli(&[
            "plugin",
            "--data-dir",
            &data_dir,
            "royalty",
            "GET",
            &format!("balance/{artist}"),
        ]);
        if !out.status.success() {
            return -1;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array()
            .and_then(|a| a.first())
            .and_then(|b| b["earned_minor"].as_i64())
            .unwrap_or(0)
    }

    /// `mhc-node pin` of `id` at this node.
    pub fn pin(&self, id: &str) -> Output {
        let data_dir = self.data_dir.to_str().expect("utf-8 path").to_owned();
        self.cli(&["pin", "--data-dir", &data_dir, id])
    }

    /// The value of one Prometheus sample (`name{labels}` exactly as rendered), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let text = String::from_utf8(self.get("/metrics").body).expect("metrics are text");
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The metric families of an OpenMetrics text exposition (`GET /metrics`), `(name, type)` in
/// order, after checking its shape: each family declared once, by `# HELP` then `# TYPE`, and
/// with at least one sample; every sample under its family, named as its type allows (a
/// counter's samples end in `_total`), with a number for a value; `# EOF` once, last.
///
/// # Panics
/// The text breaks one of these rules; the message names the line.
pub fn metric_families(text: &str) -> Vec<(String, String)> {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("the exposition does not end with `# EOF`:\n{text}"));
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = 0;
    let mut lines = body.lines();
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            if let Some((name, _)) = families.last() {
                assert!(samples > 0, "{name} has no samples");
            }
            let (name, _) = help.split_once(' ').expect("HELP has a text");
            let ty = lines
                .next()
                .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap_or_else(|| panic!("{name}: no TYPE right after its HELP"));
            assert!(
                families.iter().all(|(n, _)| n != name),
                "{name} declared twice"
            );
            families.push((name.to_owned(), ty.to_owned()));
            samples = 0;
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (name, ty) = families
            .last()
            .unwrap_or_else(|| panic!("sample before any family: {line}"));
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without a value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        let sample = series.split_once('{').map_or(series, |(n, _)| n);
        let suffixes: &[&str] = match ty.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            other => panic!("{name}: unexpected type {other}"),
        };
        assert!(
            suffixes.iter().any(|s| sample == format!("{name}{s}")),
            "{line} is not a sample of {ty} {name}"
        );
        samples += 1;
    }
    if let Some((name, _)) = families.last() {
        assert!(samples > 0, "{name} has no samples");
    }
    families
}

/// An HTTP response as the test client read it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for HEAD).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `kill -<sig>` to `pid` (STOP freezes a server: it keeps its sockets, answers nothing;
/// CONT lets it run again).
pub fn signal_process(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
///
/// # Errors
/// Connection or read errors, or a response that is not HTTP/1.1.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_exchange(addr, method, path, headers, &[])
}

/// `POST path` with `body` (HTTP/1.1, `Connection: close`).
///
/// # Errors
/// Connecting, writing or reading failed, or the response is not HTTP/1.1.
pub fn http_post(addr: SocketAddr, path: &str, body: &[u8]) -> std::io::Result<HttpResponse> {
    let len = body.len().to_string();
    http_exchange(addr, "POST", path, &[("Content-Length", &len)], body)
}

/// `POST path` with `body` and a `Content-Type` (HTTP/1.1, `Connection: close`).
///
/// # Errors
/// As [`http_post`].
pub fn http_post_typed(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let len = body.len().to_string();
    http_exchange(
        addr,
        "POST",
        path,
        &[("Content-Length", &len), ("Content-Type", content_type)],
        body,
    )
}

fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(status_line))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Writes a synthetic MPEG-TS-named rendition: `n` segments of `seg_len` bytes whose content
/// depends on `seed`, and a VOD playlist. The node never parses media, so synthetic bytes test
/// the same paths as real ones at any size.
pub fn write_synthetic_rendition(dir: &Path, n: usize, seg_len: usize, seed: u8) {
    fs::create_dir_all(dir).expect("rendition folder");
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 0..n {
        let name = format!("seg_{i:03}.ts");
        let bytes: Vec<u8> = (0..seg_len)
            .map(|j| {
                (j as u8)
                    .wrapping_mul(31)
                    .wrapping_add(i as u8)
                    .wrapping_add(seed)
            })
            .collect();
        fs::write(dir.join(&name), bytes).expect("segment file");
        playlist.push_str(&format!("#EXTINF:2.000000,\n{name}\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    fs::write(dir.join("index.m3u8"), playlist).expect("playlist file");
}

/// Opens `url` in headless Chromium (`tests/browser/page.mjs`) until `condition` holds (a
/// JavaScript expression over the page's `watch` = `window.mhcWatch` and its visible `text`),
/// at most `timeout_s`; `env` can make the script lie to the page like a proxy would
/// (`MHC_TAMPER_PATH`, `MHC_RESIGN_MANIFEST`). Returns whether the condition held and what the
/// script printed (the page's state, text, console errors, failed responses, CSP violations).
/// With `screenshot`, the page is kept as a PNG there.
pub fn open_page(
    url: &str,
    condition: &str,
    timeout_s: u32,
    screenshot: Option<&Path>,
    env: &[(&str, &str)],
) -> (bool, serde_json::Value) {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser (and apt-get install chromium) first; scripts/install-test-deps does both"
    );
    let mut cmd = Command::new("timeout");
    cmd.arg((timeout_s + 30).to_string())
        .arg("node")
        .arg(browser_dir.join("page.mjs"))
        .args([url, condition, &timeout_s.to_string()]);
    if let Some(path) = screenshot {
        cmd.arg(path);
    }
    cmd.envs(env.iter().copied());
    let out = cmd
        .output()
        .expect("node is installed (apt-get install nodejs npm; scripts/install-test-deps does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "page.mjs printed no result ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

/// Where tests keep what a person may want to look at afterwards (screenshots):
/// `target/test-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    fs::create_dir_all(&dir).expect("test artifacts folder");
    dir
}

/// Plays `playlist` with hls.js in headless Chromium (`tests/browser/play.mjs`) for 3 s of
/// media and checks, from inside the page, one segment's BLAKE3 and Merkle proof; panics with
/// the page's errors if either fails. `trusted_spki`: the base64 SHA-256 of the one TLS key the
/// browser should trust besides the public CAs (a test CA's leaf).
pub fn assert_plays_in_chromium(playlist: &str, trusted_spki: Option<&str>) {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/hls.js").is_dir(),
        "run `npm ci` in tests/browser (and apt-get install chromium) first; scripts/install-test-deps does both"
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["90", "node"])
        .arg(browser_dir.join("play.mjs"))
        .arg(playlist)
        .args(["3", "60"]);
    if let Some(spki) = trusted_spki {
        cmd.env("MHC_TLS_SPKI", spki);
    }
    let out = cmd
        .output()
        .expect("node is installed (apt-get install nodejs npm; scripts/install-test-deps does)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hls.js did not play {playlist}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"segmentVerified\":true"), "{stdout}");
}

/// Copies the shipped sample rendition into `dir`.
pub fn copy_sample(dir: &Path) {
    fs::create_dir_all(dir).expect("sample folder");
    for entry in fs::read_dir(sample_dir()).expect("sample folder exists") {
        let entry = entry.expect("sample entry");
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".sh") {
            continue;
        }
        fs::copy(entry.path(), dir.join(name)).expect("copying sample");
    }
}

/// Asserts that a CLI call succeeded, showing its output otherwise.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub mod anvil;
pub mod ceph;
pub mod etcd;
pub mod mmdb;
pub mod serf;
pub mod sshd;
pub mod udp;
pub mod wire;

/// Creates an operator key `name` in `dir` with `mhc-node operator-keygen`; returns the key
/// file and its public key hex.
pub fn operator_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(node_binary())
        .args([
            "operator-keygen",
            "--out",
            path.to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("running mhc-node operator-keygen");
    assert_success(&out, "operator-keygen");
    let key = String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .find_map(|l| l.strip_prefix("operator public_key: ").map(str::to_owned))
        .expect("the public key is printed");
    (path, key)
}

/// The operator key of the cluster in `root`: derived from the folder, so every node of one
/// cluster (and only of that one) trusts it.
fn cluster_operator(root: &Path) -> SigningKey {
    let seed = blake3::hash(format!("mhc-test-operator:{}", root.display()).as_bytes());
    SigningKey::from_bytes(seed.as_bytes())
}

/// `extra` (TOML tables a test appends) with `operator` added to `trust.operators`.
fn with_operator(extra: &str, operator: &str) -> String {
    let mut doc: toml::Table = extra.parse().expect("a test's extra TOML parses");
    let trust = doc
        .entry("trust")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[trust] is a table");
    let operators = trust
        .entry("operators")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .expect("trust.operators is an array");
    if !operators.iter().any(|o| o.as_str() == Some(operator)) {
        operators.push(toml::Value::String(operator.to_owned()));
    }
    toml::to_string(&doc).expect("TOML serialises")
}

/// Gives the node in `data_dir` its key (unless it has one) and a certificate from the
/// cluster's operator for its role, region and place, valid for a day either side of now.
fn enroll(root: &Path, data_dir: &Path, opts: &NodeOptions) {
    fs::create_dir_all(data_dir).expect("creating the node's data_dir");
    let key_path = data_dir.join("node.key");
    if !key_path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let seed = blake3::hash(format!("mhc-test-node:{}", data_dir.display()).as_bytes());
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .and_then(|mut f| f.write_all(seed.as_bytes()))
            .expect("writing the node key");
    }
    let seed: [u8; 32] = fs::read(&key_path)
        .expect("reading the node key")
        .try_into()
        .expect("a 32-byte node key");
    let mut http = vec!["127.0.0.1".to_owned()];
    if opts.p2p_ip != "127.0.0.1" {
        http.push(opts.p2p_ip.clone());
    }
    let certificate = NodeCertificate {
        area: opts.location.map(|(lat, lon)| Area {
            lat,
            lon,
            radius_km: 50.0,
        }),
        http,
        ..day_certificate(&seed, &opts.role, &opts.region)
    };
    let signed = SignedCertificate::sign(certificate, &cluster_operator(root));
    fs::write(data_dir.join("node.cert"), signed.encode()).expect("writing node.cert");
}

/// A certificate for the node key of `seed` in `role` and `region`, valid for a day either
/// side of now, placed nowhere, with no viewer host; not signed yet.
fn day_certificate(seed: &[u8; 32], role: &str, region: &str) -> NodeCertificate {
    let role = match role {
        "origin" => WireRole::Origin,
        "edge" => WireRole::Edge,
        "mesh" => WireRole::Mesh,
        "satellite-uplink" => WireRole::SatelliteUplink,
        other => panic!("unknown role {other}"),
    };
    let now = mhc_clock::Clock::system().now_ms();
    NodeCertificate {
        node: SigningKey::from_bytes(seed).verifying_key().to_bytes(),
        role,
        region: region.to_owned(),
        area: None,
        http: Vec::new(),
        not_before_ms: now - 86_400_000,
        not_after_ms: now + 86_400_000,
        serial: now,
        operator: [0; 32],
    }
}

/// Runs `ip <args>` (iproute2: network namespaces and links a test makes; needs root, which CI
/// has) and panics with its error if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip is installed (apt-get install iproute2; scripts/install-test-deps does)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
