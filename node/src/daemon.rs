//! Starting and stopping a node: open the stores, bind the planes, serve until told to stop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use ed25519_dalek::VerifyingKey;
use mhc_config::{Config, Role};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, ADMIN_SOCKET};
use crate::catalog::{open_db, Catalog};
use crate::cluster::swarm as cluster_swarm;
use crate::cluster::ClusterShared;
use crate::fill::Filler;
use crate::geo::SharedGeo;
use crate::identity::Identity;
use crate::mesh::{self, MeshPlane};
use crate::metrics::Metrics;
use crate::quic_plane::DataPlane;
use crate::server;
use crate::state::NodeState;
use crate::store::Store;
use crate::viewer;
use mhc_transport::{QuicLimits, QuicServer};

/// A started node. Dropping it does not stop it; call [`RunningNode::shutdown`].
#[derive(Debug)]
pub struct RunningNode {
    /// Shared state (for in-process callers such as the demo and tests).
    pub state: Arc<NodeState>,
    /// Path of the admin socket.
    pub admin_socket: PathBuf,
    /// libp2p addresses, with `/p2p/<peer id>`, for other nodes' `cluster.bootstrap`.
    pub p2p_addrs: Vec<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    control_plane: cluster_swarm::ControlPlaneThread,
    quic_server: QuicServer,
}

/// Starts a node with `config`: identity, stores, viewer plane, admin plane.
///
/// # Errors
/// The data directory, key, database or store cannot be opened; a listen address cannot be
/// bound; another daemon already serves this data directory.
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    let data_dir = config.data_dir.clone();
    fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
    let identity = Identity::load_or_create(&data_dir)?;
    let metrics = Arc::new(Metrics::default());

    // The database first: its exclusive lock is what keeps a second daemon off this data_dir.
    let db = open_db(&data_dir.join("db"))?;
    let store = Arc::new(
        Store::open(
            &data_dir.join("blobs"),
            config.cache.memory_bytes,
            config.cache.disk_bytes,
            // An origin's blobs are the published content: never evicted. Every other role
            // caches.
            config.role != Role::Origin,
            Arc::clone(&metrics),
        )
        .with_context(|| format!("opening blob store in {}", data_dir.display()))?,
    );
    let mut trusted: Vec<VerifyingKey> = Vec::new();
    for (i, key) in config.trust.publishers.iter().enumerate() {
        trusted.push(
            VerifyingKey::from_bytes(key)
                .map_err(|e| anyhow::anyhow!("trust.publishers[{i}]: not an ed25519 key: {e}"))?,
        );
    }
    if config.role == Role::Origin {
        // A lone origin needs no trust config: it trusts what it signs itself.
        trusted.push(identity.signing_key().verifying_key());
    }
    let catalog = Catalog::open(&db, trusted)?;
    let incarnation = crate::cluster::next_incarnation(&db).context("advancing the incarnation")?;
    let (cluster, cluster_commands) = ClusterShared::new(&config, &db);
    let (mut control_plane, p2p_addrs) = cluster_swarm::ControlPlaneThread::spawn(
        identity.signing_key().to_bytes(),
        config.listen.p2p.clone(),
    )?;

    let geo = SharedGeo::new();
    if let Some(path) = &config.geo.database {
        // A missing or corrupt database is not fatal: routing falls back to the node's own
        // region and says why, and the reloader picks the file up once it is fixed.
        if let Err(err) = geo.load(path) {
            tracing::error!(error = %err, "geo database not loaded; routing falls back to regions");
        }
    }

    let listener = TcpListener::bind(config.listen.http)
        .await
        .with_context(|| format!("binding listen.http {}", config.listen.http))?;
    let http_addr = listener.local_addr()?;

    let seed = identity.signing_key().to_bytes();
    let data_plane = DataPlane::new();
    let quic_server = QuicServer::bind(
        config.listen.quic,
        seed,
        QuicLimits::default(),
        Arc::new(data_plane.clone()),
    )
    .with_context(|| format!("binding listen.quic {}", config.listen.quic))?;
    let quic_addr = quic_server.local_addr();
    let filler = Filler::new(quic_addr, seed).context("binding the QUIC fill client")?;

    let mut mesh_peers = Vec::new();
    for (i, p) in config.mesh_peers.iter().enumerate() {
        let id = p
            .peer_id
            .as_deref()
            .and_then(|s| s.parse::<libp2p_identity::PeerId>().ok())
            .and_then(|peer| crate::mesh::endpoint_id_of(&peer))
            .with_context(|| format!("mesh.peers[{i}]: `{p}` does not name an ed25519 peer id"))?;
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
    store.attach_mesh(Arc::clone(&mesh));

    let emergency = crate::emergency::Emergency::open(&db, config.trust.operators.clone())?;
    if emergency.is_emergency() {
        tracing::warn!("starting in emergency mode (persisted from an earlier command)");
    }

    let reports = crate::reports::Reports::open(&db, config.reports.max_outbox_batches)?;
    let plugin_host = if config.role == Role::Origin {
        Some(Arc::new(crate::plugins::open(
            &config,
            &db,
            identity.signing_key(),
        )?))
    } else {
        None
    };

    let admin_socket = data_dir.join(ADMIN_SOCKET);
    let admin_listener = bind_admin_socket(&admin_socket).await?;

    let max_connections = config.http.max_connections;
    let header_read_timeout = config.http.header_read_timeout;
    let state = Arc::new(NodeState::new(
        config,
        identity,
        store,
        catalog,
        Arc::clone(&metrics),
        db,
        http_addr,
        cluster,
        incarnation,
        geo.clone(),
        filler,
        quic_addr,
        Arc::clone(&mesh),
        emergency,
        reports,
    ));
    if let Some(host) = plugin_host {
        let _ = state.plugins.set(host);
    }
    data_plane.attach(&state);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(path) = &state.config.geo.database {
        // Aborted at shutdown like the other tasks' loops end: it holds only a weak handle.
        let reloader = geo.spawn_reloader(path.clone(), crate::geo::DEFAULT_RELOAD_INTERVAL);
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = rx.changed().await;
            reloader.abort();
        }));
    }
    {
        let state = Arc::clone(&state);
        let rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let handler_state = Arc::clone(&state);
            server::serve_tcp(
                listener,
                max_connections,
                header_read_timeout,
                Arc::clone(&state.metrics),
                rx,
                move |req, remote| viewer::handle(Arc::clone(&handler_state), req, remote),
            )
            .await;
        }));
    }
    control_plane.start(Arc::clone(&state), cluster_commands, shutdown_rx.clone());
    {
        let state = Arc::clone(&state);
        let admin_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            server::serve_unix(admin_listener, admin_shutdown, move |req| {
                admin::handle(Arc::clone(&state), req)
            })
            .await;
        }));
    }
    publish_catalog_to_mesh(&state).await;
    if let Some(host) = state.plugins.get() {
        tasks.push(tokio::spawn(crate::plugins::run(
            Arc::clone(&state),
            Arc::clone(host),
            shutdown_rx.clone(),
        )));
    }
    if state.config.role != Role::SatelliteUplink {
        tasks.push(tokio::spawn(crate::reports::run(
            Arc::clone(&state),
            shutdown_rx.clone(),
        )));
    }
    if matches!(state.config.role, Role::Mesh | Role::SatelliteUplink) {
        tasks.push(tokio::spawn(mesh::replicate::run(
            Arc::clone(&state),
            Arc::clone(&state.mesh),
            shutdown_rx.clone(),
        )));
    }
    if let (Role::SatelliteUplink, Some(target)) =
        (state.config.role, state.config.satellite.uplink)
    {
        tasks.push(tokio::spawn(crate::satellite::run_uplink(
            Arc::clone(&state),
            target,
            shutdown_rx.clone(),
        )));
    }
    if let Some(addr) = state.config.satellite.downlink {
        tasks.push(tokio::spawn(crate::satellite::run_downlink(
            Arc::clone(&state),
            addr,
            shutdown_rx.clone(),
        )));
    }
    state.set_ready(true);
    write_runtime_file(&state, &admin_socket, &p2p_addrs)?;
    tracing::info!(
        peer_id = %state.identity.peer_id(),
        role = %state.config.role,
        http = %http_addr,
        admin = %admin_socket.display(),
        contents = state.catalog.len(),
        "node ready"
    );
    let peer = state.identity.peer_id();
    Ok(RunningNode {
        p2p_addrs: p2p_addrs
            .iter()
            .map(|a| format!("{a}/p2p/{peer}"))
            .collect(),
        state,
        admin_socket,
        shutdown,
        tasks,
        control_plane,
        quic_server,
    })
}

/// Makes every version in the catalog available on the mesh plane: an origin imports its
/// published content (by reference; a no-op for versions already tagged); other roles record
/// the versions whose replicas their mesh store holds.
async fn publish_catalog_to_mesh(state: &NodeState) {
    for published in state.catalog.list() {
        let m = published.manifest();
        if state.config.role == Role::Origin {
            let disk = state.store.disk();
            if let Err(err) = state.mesh.publish(&published, |h| disk.blob_path(h)).await {
                tracing::error!(content = %m.content_id, error = %format!("{err:#}"), "mesh import failed");
            }
        } else if let Some(root) = state.mesh.root_of(m.content_id.as_str(), m.version).await {
            state.mesh.set_held(
                m.content_id.as_str(),
                m.version,
                root,
                mesh::replicate::content_bytes(&published),
            );
        }
    }
}

/// File in `data_dir` that says where a running node listens (ports chosen by the OS when the
/// config says port 0), for operators' scripts and the test harness. Removed at shutdown.
pub const RUNTIME_FILE: &str = "runtime.json";

fn write_runtime_file(
    state: &NodeState,
    admin_socket: &std::path::Path,
    p2p_addrs: &[libp2p::Multiaddr],
) -> anyhow::Result<()> {
    let peer = state.identity.peer_id();
    let p2p: Vec<String> = p2p_addrs
        .iter()
        .map(|a| format!("{a}/p2p/{peer}"))
        .collect();
    let info = serde_json::json!({
        "pid": std::process::id(),
        "peer_id": state.identity.peer_id().to_string(),
        "public_key": state.identity.public_key_hex(),
        "role": state.config.role.as_str(),
        "http": state.http_addr.to_string(),
        "incarnation": state.incarnation,
        "quic": state.quic_addr.to_string(),
        "iroh": state.mesh.local_addr().to_string(),
        "p2p": p2p,
        "admin_socket": admin_socket,
    });
    let dir = &state.config.data_dir;
    let tmp = dir.join(format!("{RUNTIME_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
    fs::rename(&tmp, dir.join(RUNTIME_FILE)).context("writing runtime.json")?;
    Ok(())
}

/// Binds the admin socket, replacing a stale one but never a live daemon's.
async fn bind_admin_socket(path: &std::path::Path) -> anyhow::Result<UnixListener> {
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
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding admin socket {}", path.display()))?;
    // Only the daemon's user may administer it.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl RunningNode {
    /// Stops accepting, drains in-flight requests, flushes the database.
    pub async fn shutdown(self) {
        self.state.set_ready(false);
        let _ = self.shutdown.send(true);
        self.quic_server.shutdown().await;
        for task in self.tasks {
            let _ = task.await;
        }
        let control_plane = self.control_plane;
        let _ = tokio::task::spawn_blocking(move || control_plane.join()).await;
        // The store holds the last reference besides the state; stopping the router closes
        // the iroh endpoint and the blob store.
        self.state.mesh.shutdown_router().await;
        if let Err(err) = self.state.db.flush_async().await {
            tracing::error!(error = %err, "flushing the database at shutdown");
        }
        let _ = fs::remove_file(&self.admin_socket);
        let _ = fs::remove_file(self.state.config.data_dir.join(RUNTIME_FILE));
        tracing::info!("node stopped");
    }
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
