//! `mhc-node`: the distribution daemon of the MHC streaming platform, one binary for the origin,
//! edge, mesh and satellite-uplink roles (see `ARCHITECTURE.md`).
//!
//! Entry point: [`daemon::start`] turns a validated [`mhc_config::Config`] into a running node
//! (identity, store, catalog, viewer plane, admin plane); [`cli`] is the command line around it.

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod demo;
pub mod emergency;
pub mod fill;
pub mod geo;
pub mod identity;
pub mod ingest;
pub mod mesh;
pub mod metrics;
pub mod plugins;
pub mod quic_plane;
pub mod reports;
pub mod routing;
pub mod satellite;
mod server;
pub mod state;
pub mod store;
pub mod viewer;

/// Waits for ctrl-c or SIGTERM (systemd's stop signal).
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
