//! Crash consistency: a child process appends batches until it is killed with SIGKILL at an
//! arbitrary moment; the store must then open and verify with only whole batches in it.
//!
//! The child is this same test binary, re-run on the ignored test [`crash_child`] with the
//! database path in an environment variable (a `tests/` integration test could not reach the
//! crate's test helpers).

use std::process::{Command, Stdio};
use std::time::Duration;

use super::entry::tests::sample;
use super::log::tests::{key, open_when_unlocked};
use super::Ledger;

/// Environment variable that turns [`crash_child`] into the appending child.
const CHILD_DB_ENV: &str = "MHC_LEDGER_CRASH_CHILD_DB";
/// Entries per batch in the child: whole multiples must survive.
const BATCH: u64 = 50;

/// The appending child. Ignored so that ordinary runs skip it; a no-op without the variable.
#[test]
#[ignore = "child process of kill_mid_append_leaves_whole_batches"]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let db = open_when_unlocked(std::path::Path::new(&path));
    let mut ledger = Ledger::open(&db, key()).unwrap();
    loop {
        let start = ledger.len();
        let batch = (start..start + BATCH).map(sample).collect();
        ledger.append_batch(batch).unwrap();
    }
}

#[test]
fn kill_mid_append_leaves_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut previous = 0;
    // Kill times chosen to land at different points of the append loop; fixed so runs repeat.
    for (round, delay_ms) in [150u64, 230, 310, 420].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["--exact", "ledger::crash_tests::crash_child", "--ignored"])
            .env(CHILD_DB_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // Child::kill is SIGKILL on Unix: no destructor, no final flush.
        child.kill().unwrap();
        child.wait().unwrap();

        let db = open_when_unlocked(dir.path());
        let ledger = Ledger::open(&db, key())
            .unwrap_or_else(|e| panic!("round {round}: reopening after the kill: {e}"));
        let report = ledger
            .verify()
            .unwrap_or_else(|e| panic!("round {round}: verify after the kill: {e}"));
        let len = report.entries.end;
        assert_eq!(len % BATCH, 0, "round {round}: a partial batch survived");
        assert!(len >= previous, "round {round}: flushed batches were lost");
        assert_eq!(ledger.latest_head().map_or(0, |h| h.size), len);
        previous = len;
    }
    // The child must have had time to append at least once over all rounds.
    assert!(previous > 0, "the child never appended");
}
