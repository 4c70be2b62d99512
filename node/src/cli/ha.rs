//! `mhc-node ha …`: the origin election as operators drive it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use http::Method;

use super::client::call as admin_call;
use super::runtime;
use crate::admin::api::ADMIN_SOCKET;

/// `mhc-node ha …`.
#[derive(Debug, Subcommand)]
pub enum HaAction {
    /// Hand the primary's role to a synced standby, step by step (stop writes, wait for
    /// catch-up, promote, verify health, notify); run at the primary. Prints each step;
    /// exits 1 if one failed.
    Switchover {
        /// The primary's configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs `mhc-node ha …`.
///
/// # Errors
/// The configuration or the daemon fails, or the daemon refuses (named).
pub fn ha_command(action: HaAction) -> anyhow::Result<ExitCode> {
    match action {
        HaAction::Switchover { config } => {
            let config = mhc_config::load(&config)?;
            let socket = config.data_dir.join(ADMIN_SOCKET);
            let answer = runtime()?.block_on(admin_call(
                &socket,
                Method::POST,
                "/admin/ha/switchover",
                None,
            ))?;
            let steps = answer["steps"].as_array().cloned().unwrap_or_default();
            let mut all_ok = !steps.is_empty();
            for (i, step) in steps.iter().enumerate() {
                let ok = step["ok"].as_bool().unwrap_or(false);
                all_ok &= ok;
                println!(
                    "{}. {:<18} {:<6} {:>6} ms  {}",
                    i + 1,
                    step["step"].as_str().unwrap_or("?"),
                    if ok { "ok" } else { "FAILED" },
                    step["at_ms"],
                    step["detail"].as_str().unwrap_or("")
                );
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
