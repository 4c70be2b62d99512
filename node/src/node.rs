//! The composition root: builds the [`Core`], binds the planes around it, and spawns what the
//! node's [`RolePolicy`](crate::role::RolePolicy) lists. Nothing else in the crate knows all the
//! planes; each is built from the core and the narrow handles it needs, and addresses known
//! only after binding travel as a value ([`BoundAddrs`]) to the planes that need them.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use mhc_config::Config;
use mhc_transport::{QuicLimits, QuicServer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::api::ADMIN_SOCKET;
use crate::admin::{Admin, Ingest};
use crate::backup::Backups;
use crate::control::messages::{HeldContent, PlayCount};
use crate::control::{Advertise, BoundAddrs, ClusterHandle, ControlPlane, Wiring};
use crate::core::identity::Identity;
use crate::core::metrics::Metrics;
use crate::core::{open_db, Core};
use crate::fill::{Filler, ParentAddr, Parents};
use crate::geo::SharedGeo;
use crate::ha::Ha;
use crate::mesh::replicate::Replication;
use crate::mesh::{self, MeshPlane};
use crate::plugins::Plugins;
use crate::quic_serve::QuicServe;
use crate::reports::{Delivery, Reports};
use crate::server::{self, Security};
use crate::status::NodeStatus;
use crate::tls::ViewerTls;
use crate::viewer::Viewer;

/// File in `data_dir` that says where a running node listens (ports chosen by the OS when the
/// config says port 0), for operators' scripts and the test harness. Removed at shutdown.
pub const RUNTIME_FILE: &str = "runtime.json";

/// A started node. Dropping it does not stop it; call [`Node::shutdown`].
#[derive(Debug)]
pub struct Node {
    core: Arc<Core>,
    cluster: ClusterHandle,
    mesh: Arc<MeshPlane>,
    addrs: BoundAddrs,
    admin_socket: PathBuf,
    p2p_addrs: Vec<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    control_plane: ControlPlane,
    quic_server: QuicServer,
}

/// The parents of a node: configured `upstream.parents` in their order, else the alive
/// origins of the membership table, least loaded first.
#[derive(Debug)]
struct UpstreamParents {
    configured: Vec<ParentAddr>,
    cluster: ClusterHandle,
}

impl Parents for UpstreamParents {
    fn parents(&self) -> Vec<ParentAddr> {
        if !self.configured.is_empty() {
            return self.configured.clone();
        }
        self.cluster
            .origins()
            .into_iter()
            .map(|o| ParentAddr {
                addr: o.quic,
                peer_id: Some(o.peer_id),
            })
            .collect()
    }
}

/// What heartbeats say about this node's content: the catalog, with the mesh roots and plays
/// of the mesh plane.
#[derive(Debug)]
struct Holdings {
    core: Arc<Core>,
    mesh: Arc<MeshPlane>,
}

impl Advertise for Holdings {
    fn contents(&self, limit: usize) -> (Vec<HeldContent>, u32) {
        let list = self.core.catalog.list();
        let contents = list
            .iter()
            .take(limit)
            .map(|p| {
                let m = p.manifest();
                let held = self
                    .mesh
                    .held(m.content_id.as_str())
                    .filter(|h| h.version == m.version);
                HeldContent {
                    id: m.content_id.to_string(),
                    version: m.version,
                    mesh_root: held.map_or([0; 32], |h| h.root),
                    bytes: p.blob_bytes(),
                }
            })
            .collect();
        (contents, list.len() as u32)
    }

    fn replicating(&self) -> Vec<[u8; 32]> {
        self.mesh.replicating()
    }

    fn plays(&self) -> Vec<PlayCount> {
        self.mesh.plays().top()
    }
}

impl Node {
    /// Starts a node with `config`: opens its stores, binds every plane, spawns its tasks.
    ///
    /// # Errors
    /// The data directory, key, database or store cannot be opened; a listen address cannot be
    /// bound; another daemon already serves this data directory.
    pub async fn start(config: Config) -> anyhow::Result<Node> {
        let data_dir = config.data_dir.clone();
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        let identity = Identity::load_or_create(&data_dir)?;
        let seed = identity.signing_key().to_bytes();
        let metrics = Arc::new(Metrics::default());
        // The database first: its exclusive lock is what keeps a second daemon off this
        // data_dir.
        let db = open_db(&data_dir.join("db"))?;

        // The mesh plane's store is the blob store's last tier, so it comes first.
        let mut mesh_peers = Vec::new();
        for (i, p) in config.mesh_peers.iter().enumerate() {
            let id = p
                .peer_id
                .as_deref()
                .and_then(|s| s.parse::<libp2p_identity::PeerId>().ok())
                .and_then(|peer| mesh::endpoint_id_of(&peer))
                .with_context(|| {
                    format!("mesh.peers[{i}]: `{p}` does not name an ed25519 peer id")
                })?;
            mesh_peers.push((id, p.addr));
        }
        let mesh = Arc::new(
            MeshPlane::start(
                &data_dir.join("iroh"),
                config.listen.iroh,
                seed,
                &mesh_peers,
                &db,
                Arc::clone(&metrics),
            )
            .await?,
        );

        let core = Arc::new(Core::open(
            config,
            identity,
            db,
            metrics,
            mhc_clock::Clock::system(),
            Some(Arc::clone(&mesh) as _),
        )?);
        if core.emergency.is_emergency() {
            tracing::warn!("starting in emergency mode (persisted from an earlier command)");
        }
        report_enrollment(&core);
        let policy = core.policy();
        let config = &core.config;

        let geo = SharedGeo::new();
        core.metrics
            .register_collector(crate::geo::GeoCacheMetrics::new(&geo));
        if let Some(path) = &config.geo.database {
            // A missing or corrupt database is not fatal: routing falls back to the node's own
            // region and says why, and the reloader picks the file up once it is fixed.
            if let Err(err) = geo.load(path) {
                tracing::error!(error = %err, "geo database not loaded; routing falls back to regions");
            }
        }

        let (cluster, cluster_commands) = ClusterHandle::new(config, &core.db);
        let parents = UpstreamParents {
            configured: config
                .upstream
                .parents
                .iter()
                .map(|p| ParentAddr {
                    addr: p.addr,
                    peer_id: p.peer_id.as_deref().and_then(|s| s.parse().ok()),
                })
                .collect(),
            cluster: cluster.clone(),
        };
        let filler = Arc::new(
            Filler::new(Arc::clone(&core), Arc::new(parents))
                .context("binding the QUIC fill client")?,
        );
        let reports = Arc::new(Reports::open(
            &core.db,
            config.reports.max_outbox_batches,
            core.clock.clone(),
            &core.metrics,
        )?);
        let plugins = if policy.runs_plugins() {
            Some(Arc::new(Plugins::open(Arc::clone(&core))?))
        } else {
            None
        };

        // An origin that elects its primary serves its log while primary and follows the
        // primary's while standby.
        let replication = (policy.runs_plugins() && config.ha.is_some()).then(|| {
            let lag = crate::ha::follow::Lag::new(&core);
            let follower = crate::ha::follow::Follower::new(
                Arc::clone(&core),
                Arc::clone(&filler),
                Arc::clone(&lag),
            );
            (
                Arc::new(crate::ha::source::Source::new(Arc::clone(&lag))),
                Arc::new(follower),
                lag,
            )
        });
        let quic_server = QuicServer::bind(
            config.listen.quic,
            seed,
            QuicLimits {
                max_connections: config.quic.max_connections,
                max_connections_per_address: config.quic.max_connections_per_address,
                max_connections_per_peer: config.quic.max_connections_per_peer,
                ..QuicLimits::default()
            },
            Arc::new(QuicServe::new(
                Arc::clone(&core),
                Arc::clone(&filler),
                plugins.clone(),
                replication
                    .as_ref()
                    .map(|(source, _, _)| Arc::clone(source)),
            )),
        )
        .with_context(|| format!("binding listen.quic {}", config.listen.quic))?;
        let listener = TcpListener::bind(config.listen.http)
            .await
            .with_context(|| format!("binding listen.http {}", config.listen.http))?;
        let https = match (config.listen.https, &config.http.tls) {
            (Some(addr), Some(files)) => {
                let tls = ViewerTls::load(files).context(
                    "loading the viewer plane's TLS certificate (http.tls_cert, http.tls_key)",
                )?;
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding listen.https {addr}"))?;
                Some((listener, tls))
            }
            _ => None,
        };
        let swim_socket = std::net::UdpSocket::bind(config.listen.swim)
            .with_context(|| format!("binding listen.swim {}", config.listen.swim))?;
        let addrs = BoundAddrs {
            http: listener.local_addr()?,
            quic: quic_server.local_addr(),
            iroh: mesh.local_addr(),
            swim: swim_socket.local_addr()?,
            https: https.as_ref().map(|(l, _)| l.local_addr()).transpose()?,
        };
        let admin_socket = data_dir.join(ADMIN_SOCKET);
        let admin_listener = bind_admin_socket(&admin_socket).await?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let (control_plane, p2p_listen) = ControlPlane::spawn(Wiring {
            core: Arc::clone(&core),
            cluster: cluster.clone(),
            commands: cluster_commands,
            advertise: Arc::new(Holdings {
                core: Arc::clone(&core),
                mesh: Arc::clone(&mesh),
            }),
            addrs,
            swim_socket,
            shutdown: shutdown_rx.clone(),
        })?;

        let status = NodeStatus::new(
            Arc::clone(&core),
            cluster.clone(),
            addrs,
            replication.as_ref().map(|(_, _, lag)| Arc::clone(lag)),
        );
        let mut tasks = Vec::new();
        if let Some(path) = &config.geo.database {
            // Aborted at shutdown like the other tasks' loops end: it holds only a weak handle.
            let reloader = geo.spawn_reloader(path.clone(), crate::geo::DEFAULT_RELOAD_INTERVAL);
            let mut rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let _ = rx.changed().await;
                reloader.abort();
            }));
        }
        {
            let viewer = Arc::new(Viewer {
                core: Arc::clone(&core),
                filler: Arc::clone(&filler),
                cluster: cluster.clone(),
                geo: geo.clone(),
                reports: Arc::clone(&reports),
                mesh: Arc::clone(&mesh),
                plugins: plugins.clone(),
                status: status.clone(),
                bad_segments: Default::default(),
            });
            let plain = std::iter::once((listener, Security::Plain));
            let secure = https.map(|(listener, tls)| {
                tasks.push(tokio::spawn(Arc::clone(&tls).watch(shutdown_rx.clone())));
                (listener, Security::Tls(tls))
            });
            for (listener, security) in plain.chain(secure) {
                let (viewer, metrics) = (Arc::clone(&viewer), Arc::clone(&core.metrics));
                let (limits, rx) = (config.http.clone(), shutdown_rx.clone());
                tasks.push(tokio::spawn(async move {
                    server::serve_tcp(
                        listener,
                        security,
                        limits,
                        metrics,
                        rx,
                        move |req, remote| Arc::clone(&viewer).handle(req, remote),
                    )
                    .await;
                }));
            }
        }
        let ha = replication.as_ref().and_then(|(source, follower, _)| {
            Ha::new(
                Arc::clone(&core),
                &addrs,
                Arc::clone(source),
                Arc::clone(follower),
            )
        });
        if let Some(ha) = &ha {
            tasks.push(tokio::spawn(Arc::clone(ha).run(shutdown_rx.clone())));
        }
        let backups = Backups::new(Arc::clone(&core), plugins.clone())?;
        if let Some(backups) = backups.as_ref().filter(|_| config.backup.schedule) {
            tasks.push(tokio::spawn(Arc::clone(backups).run(shutdown_rx.clone())));
        }
        {
            let ingest = plugins.as_ref().filter(|_| policy.publishes()).map(|p| {
                Arc::new(Ingest::new(
                    Arc::clone(&core),
                    Arc::clone(&mesh),
                    cluster.clone(),
                    Arc::clone(p),
                ))
            });
            let admin = Arc::new(Admin {
                core: Arc::clone(&core),
                filler: Arc::clone(&filler),
                cluster: cluster.clone(),
                mesh: Arc::clone(&mesh),
                plugins: plugins.clone(),
                ingest,
                status: status.clone(),
                backups,
                ha,
            });
            let rx = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                server::serve_unix(admin_listener, rx, move |req| {
                    Arc::clone(&admin).handle(req)
                })
                .await;
            }));
        }
        publish_catalog_to_mesh(&core, &mesh).await;
        if let Some(plugins) = &plugins {
            tasks.push(tokio::spawn(Arc::clone(plugins).run(shutdown_rx.clone())));
        }
        if policy.reports_plays() {
            let delivery = Delivery {
                core: Arc::clone(&core),
                reports: Arc::clone(&reports),
                cluster: cluster.clone(),
                filler: Arc::clone(&filler),
                plugins: plugins.clone(),
            };
            tasks.push(tokio::spawn(delivery.run(shutdown_rx.clone())));
        }
        if policy.replicates() {
            let replication = Replication {
                core: Arc::clone(&core),
                cluster: cluster.clone(),
                filler: Arc::clone(&filler),
                set_aside: Default::default(),
            };
            tasks.push(tokio::spawn(mesh::replicate::run(
                replication,
                Arc::clone(&mesh),
                shutdown_rx.clone(),
            )));
        }
        if let (true, Some(target)) = (policy.sends_broadcast(), config.satellite.uplink) {
            tasks.push(tokio::spawn(crate::broadcast::run_uplink(
                Arc::clone(&core),
                Arc::clone(&mesh),
                target,
                shutdown_rx.clone(),
            )));
        }
        if let Some(addr) = config.satellite.downlink {
            tasks.push(tokio::spawn(crate::broadcast::run_downlink(
                Arc::clone(&core),
                cluster.clone(),
                addr,
                shutdown_rx.clone(),
            )));
        }
        if core.enrollment.is_some() {
            // The certificate outlives most processes; say it again every hour once it nears
            // its end.
            let (core, mut stop) = (Arc::clone(&core), shutdown_rx.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                    }
                    if let Some(e) = &core.enrollment {
                        e.warn_if_expiring(core.clock.now_ms());
                    }
                }
            }));
        }
        core.set_ready(true);
        let peer = core.identity.peer_id();
        let p2p_addrs: Vec<String> = p2p_listen
            .iter()
            .map(|a| format!("{a}/p2p/{peer}"))
            .collect();
        write_runtime_file(&core, &addrs, &admin_socket, &p2p_addrs)?;
        tracing::info!(
            peer_id = %peer,
            role = %core.config.role,
            http = %addrs.http,
            admin = %admin_socket.display(),
            contents = core.catalog.len(),
            "node ready"
        );
        Ok(Node {
            core,
            cluster,
            mesh,
            addrs,
            admin_socket,
            p2p_addrs,
            shutdown,
            tasks,
            control_plane,
            quic_server,
        })
    }

    /// The node's public key, hex (what other nodes put in `trust.publishers`).
    pub fn public_key_hex(&self) -> String {
        self.core.identity.public_key_hex()
    }

    /// Where the viewer plane listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.addrs.http
    }

    /// Path of the admin socket.
    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    /// libp2p addresses, with `/p2p/<peer id>`, for other nodes' `cluster.bootstrap`.
    pub fn p2p_addrs(&self) -> &[String] {
        &self.p2p_addrs
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.core.config.data_dir
    }

    /// Other members this node sees alive.
    pub fn alive_members(&self) -> usize {
        self.cluster.counts().0
    }

    /// Pins `id` (a mesh node replicates it and keeps it).
    ///
    /// # Errors
    /// The pin cannot be stored.
    pub fn pin(&self, id: &mhc_manifest::ContentId) -> anyhow::Result<bool> {
        self.mesh.pins().pin(id)
    }

    /// Whether this node holds a version of `id` whole on the mesh plane.
    pub fn holds_on_mesh(&self, id: &str) -> bool {
        self.mesh.held(id).is_some()
    }

    /// Stops accepting, drains in-flight requests, flushes the database.
    pub async fn shutdown(self) {
        self.core.set_ready(false);
        let _ = self.shutdown.send(true);
        self.quic_server.shutdown().await;
        for task in self.tasks {
            let _ = task.await;
        }
        let control_plane = self.control_plane;
        let _ = tokio::task::spawn_blocking(move || control_plane.join()).await;
        // Stopping the router closes the iroh endpoint and the blob store.
        self.mesh.shutdown_router().await;
        if let Err(err) = self.core.db.flush_async().await {
            tracing::error!(error = %err, "flushing the database at shutdown");
        }
        let _ = fs::remove_file(&self.admin_socket);
        let _ = fs::remove_file(self.core.config.data_dir.join(RUNTIME_FILE));
        tracing::info!("node stopped");
    }
}

/// Says how this node is enrolled, and exposes its certificate's expiry as
/// `mhc_certificate_expiry_timestamp_seconds` (0: no certificate) for alerts.
fn report_enrollment(core: &Core) {
    let expiry =
        prometheus_client::metrics::gauge::Gauge::<u64, std::sync::atomic::AtomicU64>::default();
    match &core.enrollment {
        Some(e) => {
            let c = &e.signed.certificate;
            tracing::info!(
                certificate = %e.path.display(),
                serial = c.serial,
                operator = %hex::encode(c.operator),
                expires = %crate::core::enrollment::utc(c.not_after_ms),
                "enrolled"
            );
            e.warn_if_expiring(core.clock.now_ms());
            expiry.set(c.not_after_ms / 1000);
        }
        None => tracing::warn!(
            "not enrolled (no node certificate): other nodes will not admit this one as a member; \
             `mhc-node id` prints the key an operator enrolls with `mhc-node enroll`"
        ),
    }
    core.metrics.register(
        "mhc_certificate_expiry_timestamp_seconds",
        "When this node's certificate expires, seconds since the epoch (0: not enrolled)",
        expiry,
    );
}

/// Makes every version in the catalog available on the mesh plane: an origin imports its
/// published content (by reference; a no-op for versions already tagged); other roles record
/// the versions whose replicas their mesh store holds.
async fn publish_catalog_to_mesh(core: &Core, mesh: &MeshPlane) {
    let publishes = core.policy().publishes();
    for published in core.catalog.list() {
        let m = published.manifest();
        if publishes {
            let disk = core.store.disk();
            if let Err(err) = mesh.publish(&published, |h| disk.blob_path(h)).await {
                tracing::error!(content = %m.content_id, error = %format!("{err:#}"), "mesh import failed");
            }
        } else if let Some(root) = mesh.root_of(m.content_id.as_str(), m.version).await {
            mesh.set_held(
                m.content_id.as_str(),
                m.version,
                root,
                published.blob_bytes(),
            );
        }
    }
}

fn write_runtime_file(
    core: &Core,
    addrs: &BoundAddrs,
    admin_socket: &Path,
    p2p_addrs: &[String],
) -> anyhow::Result<()> {
    let info = serde_json::json!({
        "pid": std::process::id(),
        "peer_id": core.identity.peer_id().to_string(),
        "public_key": core.identity.public_key_hex(),
        "role": core.config.role.as_str(),
        "http": addrs.http.to_string(),
        "https": addrs.https.map(|a| a.to_string()),
        "incarnation": core.incarnation,
        "quic": addrs.quic.to_string(),
        "iroh": addrs.iroh.to_string(),
        "swim": addrs.swim.to_string(),
        "p2p": p2p_addrs,
        "admin_socket": admin_socket,
    });
    let dir = &core.config.data_dir;
    let tmp = dir.join(format!("{RUNTIME_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
    fs::rename(&tmp, dir.join(RUNTIME_FILE)).context("writing runtime.json")?;
    Ok(())
}

/// Binds the admin socket, replacing a stale one but never a live daemon's.
async fn bind_admin_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another mhc-node is already serving {} (admin socket answers)",
                path.display()
            );
        }
        fs::remove_file(path)
            .with_context(|| format!("removing stale admin socket {}", path.display()))?;
    }
    // Only the daemon's user may administer it, from the first instant: the socket is bound in
    // a fresh folder only the daemon's user can enter, made 0600 there, and then renamed into
    // place (a rename keeps the listening socket and is atomic).
    let parent = path.parent().unwrap_or(Path::new("."));
    let private = tempfile::Builder::new()
        .prefix(".admin-sock-")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .with_context(|| format!("creating a private folder in {}", parent.display()))?;
    let staged = private.path().join("admin.sock");
    let listener = UnixListener::bind(&staged)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o600))?;
    fs::rename(&staged, path)
        .with_context(|| format!("moving the admin socket to {}", path.display()))?;
    Ok(listener)
}

/// Tells systemd (`Type=notify`) about a state change, if it is listening.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), PathBuf::from(path))
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, "sd_notify failed");
    }
}
