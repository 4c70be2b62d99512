//! Recent plays per content at this node, for the heartbeat's play counts: mesh nodes replicate
//! what their region watches.
//!
//! A play here is a playlist request (`index.m3u8`): players fetch it when they start and, for
//! live streams, as they go, so it tracks how much a content is watched without keeping
//! per-viewer state. Two fixed windows of [`WINDOW`] give "recent" without a timer.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::control::messages::{PlayCount, MAX_HEARTBEAT_PLAYS};

/// Length of one counting window; the count covers the current and the previous window.
pub const WINDOW: Duration = Duration::from_secs(300);

/// Most distinct contents counted per window; beyond it new ids are not counted (bounded
/// memory under a scan of ids).
const MAX_IDS: usize = 4096;

#[derive(Debug)]
struct Windows {
    started: Instant,
    current: HashMap<String, u32>,
    previous: HashMap<String, u32>,
}

/// Play counter.
#[derive(Debug)]
pub struct Plays {
    windows: Mutex<Windows>,
}

impl Default for Plays {
    fn default() -> Self {
        Self {
            windows: Mutex::new(Windows {
                started: Instant::now(),
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }
}

impl Plays {
    fn rotate(w: &mut Windows, now: Instant) {
        let elapsed = now.saturating_duration_since(w.started);
        if elapsed >= WINDOW * 2 {
            w.previous.clear();
            w.current.clear();
            w.started = now;
        } else if elapsed >= WINDOW {
            w.previous = std::mem::take(&mut w.current);
            w.started += WINDOW;
        }
    }

    /// Counts one play of `id`.
    pub fn record(&self, id: &str) {
        let mut w = self.windows.lock();
        Self::rotate(&mut w, Instant::now());
        if let Some(n) = w.current.get_mut(id) {
            *n = n.saturating_add(1);
        } else if w.current.len() < MAX_IDS {
            w.current.insert(id.to_owned(), 1);
        }
    }

    /// The most played contents of the last one to two windows, most played first.
    pub fn top(&self) -> Vec<PlayCount> {
        let mut w = self.windows.lock();
        Self::rotate(&mut w, Instant::now());
        let mut sum: HashMap<&str, u32> = HashMap::new();
        for (id, n) in w.current.iter().chain(w.previous.iter()) {
            let e = sum.entry(id.as_str()).or_default();
            *e = e.saturating_add(*n);
        }
        let mut top: Vec<PlayCount> = sum
            .into_iter()
            .map(|(id, plays)| PlayCount {
                id: id.to_owned(),
                plays,
            })
            .collect();
        top.sort_by(|a, b| b.plays.cmp(&a.plays).then_with(|| a.id.cmp(&b.id)));
        top.truncate(MAX_HEARTBEAT_PLAYS);
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ranks() {
        let p = Plays::default();
        for _ in 0..3 {
            p.record("b");
        }
        p.record("a");
        let top = p.top();
        assert_eq!(top[0].id, "b");
        assert_eq!(top[0].plays, 3);
        assert_eq!(top[1].id, "a");
    }

    #[test]
    fn windows_roll_over() {
        let p = Plays::default();
        p.record("a");
        {
            let mut w = p.windows.lock();
            w.started -= WINDOW;
        }
        p.record("a");
        assert_eq!(p.top()[0].plays, 2, "previous window still counts");
        {
            let mut w = p.windows.lock();
            w.started -= WINDOW * 2;
        }
        assert!(p.top().is_empty(), "two windows later nothing is recent");
    }
}
