//! `mhc-node`: the distribution daemon of the MHC streaming platform, one binary for the origin,
//! edge, mesh and satellite-uplink roles (see `ARCHITECTURE.md`).
//!
//! Entry point: [`Node::start`] turns a validated [`mhc_config::Config`] into a running node;
//! [`Cli`] is the command line around it. Inside, the composition root (`node.rs`) builds the
//! shared [`core`](crate#layout) and binds the planes around it, each from the core and the
//! narrow handles it needs; [`RolePolicy`] answers every role × mode question in one place.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `node` | composition root: build the core, bind the planes, spawn what the policy lists |
//! | `role` | [`RolePolicy`]: what a node does in its role and mode |
//! | `core/` | shared state, no sockets: config, identity, catalog, store, emergency, metrics |
//! | `control/` | libp2p gossip and membership; `ClusterHandle` is its API |
//! | `fill/` | QUIC client: fills what an edge lacks from its `Parents` |
//! | `quic_serve` | QUIC server: answers other nodes and takes play reports |
//! | `mesh/` | iroh-blobs plane: replication among mesh nodes |
//! | `broadcast/` | satellite uplink carousel and downlink receiver |
//! | `routing/` | pure routing decisions: client address, location, ranking |
//! | `geo/` | `.mmdb` databases and their hot reload |
//! | `viewer/` | the viewer HTTP plane |
//! | `admin/` | the admin socket: API types, ingest, server |
//! | `plugins`, `reports` | the origin's plugin host; play counting and the report outbox |
//! | `backup/` | the origin's verified backups: image export, restic repository, verification |
//! | `ha/` | the origins' election on etcd: primary, standbys, the fence of the write gate |
//! | `http`, `server`, `status` | shared HTTP helpers, accept loops, the node as operators see it |
//! | `cli/` | the command line, the admin client, the demo |
//!
//! Modules are private; what the binary, the end-to-end tests and the benchmarks use is
//! re-exported below. The wire formats (gossip messages, the QUIC protocol, the carousel) are
//! [`mhc_transport`]'s.

mod admin;
mod backup;
mod broadcast;
mod cli;
mod control;
mod core;
mod fill;
mod geo;
mod ha;
mod http;
mod mesh;
mod node;
mod plugins;
mod quic_serve;
mod reports;
mod role;
mod routing;
mod server;
mod status;
mod tls;
mod viewer;

pub use backup::{
    image::ImageManifest, restore_snapshot, verify_snapshot, Kind as BackupKind,
    Repo as BackupRepo, S3Credentials, SnapshotInfo, Verified,
};
pub use cli::{print_status, wait_for_signal, write_sample, Cli, SAMPLE_ID};
pub use control::membership::{Member, MemberState, Membership, MembershipConfig};
pub use core::emergency::{Action, Command, Rejected, SignedCommand};
pub use core::store::{AlignedBlob, DiskTier, S3Fifo};
pub use geo::{
    GeoCacheStats, GeoDb, GeoError, GeoInfo, GeoStatus, SharedGeo, UnitVector,
    DEFAULT_RELOAD_INTERVAL as DEFAULT_GEO_RELOAD_INTERVAL,
};
pub use node::{sd_notify, Node, RUNTIME_FILE};
pub use role::{NotServing, RolePolicy};
pub use routing::{
    chosen as chosen_candidate, decide, haversine_km, resolve_client, return_scratch, take_scratch,
    AddrSource, Candidate, ClientAddr, Decision, Depth, GeoAvailability, Outcome as RouteOutcome,
    Settings,
};
