//! The `label` origin plugin: releases of published music to DSPs (streaming services).
//!
//! Every track gets an ISRC and every release a UPC ([`ids`], allocated in [`store`] so that
//! no code is ever issued twice); a DDEX ERN 4.3 message describes each release to each DSP
//! ([`ern`]); the plugin ([`plugin`]) serves the admin routes under `/admin/plugins/label/`
//! and reads the origin's catalog through [`media::MediaLibrary`], which the node implements.

pub mod config;
pub mod delivery;
pub mod dsr;
pub mod ern;
pub mod ids;
pub mod media;
pub mod plugin;
pub mod release;
pub mod sales;
pub mod sftp;
pub mod store;
mod worker;

pub use config::{DspConfig, LabelConfig};
pub use media::{MediaLibrary, TrackMedia};
pub use plugin::{LabelPlugin, LABEL_PLUGIN_NAME};
