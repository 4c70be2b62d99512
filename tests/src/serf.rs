//! A Serf cluster on loopback (HashiCorp's agent on memberlist, Debian package `serf`), the
//! reference that `cluster-bench` compares mhc's membership with: the same number of agents,
//! at Serf's defaults (the LAN profile), each noting when it saw another fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// One agent.
#[derive(Debug)]
pub struct SerfAgent {
    /// Its node name (`s0`, `s1`, …).
    pub name: String,
    /// The port its gossip listens on, UDP and TCP.
    pub port: u16,
    rpc: String,
    child: Option<Child>,
}

/// Agents that joined the first one; killed on drop.
#[derive(Debug)]
pub struct SerfCluster {
    dir: PathBuf,
    /// The agents, in start order.
    pub agents: Vec<SerfAgent>,
}

/// The serf program, if installed.
pub fn serf_program() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/serf");
    path.exists().then_some(path)
}

impl SerfCluster {
    /// Starts `n` agents in `dir`, each joining the first, with an event handler that appends
    /// `NAME MILLISECONDS` to `failed.AGENT` for every member it sees fail.
    ///
    /// # Panics
    /// When serf is not installed or an agent does not start.
    pub fn start(dir: &Path, n: usize) -> Self {
        let serf = serf_program().expect("serf installed (apt install serf)");
        fs::create_dir_all(dir).expect("serf folder");
        let handler = dir.join("failed.sh");
        fs::write(
            &handler,
            format!(
                "#!/bin/sh\nwhile read name rest; do echo \"$name $(date +%s%3N)\" >> {}/failed.$SERF_SELF_NAME; done\n",
                dir.display()
            ),
        )
        .expect("event handler");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&handler, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let mut agents: Vec<SerfAgent> = Vec::new();
        for i in 0..n {
            let port = free_port();
            let rpc = format!("127.0.0.1:{}", free_port());
            let mut cmd = Command::new(&serf);
            cmd.arg("agent")
                .arg(format!("-node=s{i}"))
                .arg(format!("-bind=127.0.0.1:{port}"))
                .arg(format!("-rpc-addr={rpc}"))
                .arg(format!(
                    "-event-handler=member-failed={}",
                    handler.display()
                ))
                .arg("-log-level=warn");
            if let Some(first) = agents.first() {
                cmd.arg(format!("-join=127.0.0.1:{}", first.port));
            }
            let log = fs::File::create(dir.join(format!("s{i}.log"))).expect("agent log");
            let child = cmd
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .expect("serf agent starts");
            let agent = SerfAgent {
                name: format!("s{i}"),
                port,
                rpc,
                child: Some(child),
            };
            // The next agents join this one's gossip port: wait for its RPC to answer first.
            let ready = crate::wait_until(Duration::from_secs(20), || agent.alive_members() > 0);
            assert!(ready, "serf agent s{i} did not start");
            agents.push(agent);
        }
        Self {
            dir: dir.to_owned(),
            agents,
        }
    }

    /// Whether every running agent sees `alive` members alive (itself included).
    pub fn all_see(&self, alive: usize) -> bool {
        self.agents
            .iter()
            .filter(|a| a.child.is_some())
            .all(|a| a.alive_members() == alive)
    }

    /// SIGKILLs agent `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.agents[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// When each running agent noted `name` failed (milliseconds since the Unix epoch), or
    /// `None` if some has not yet.
    pub fn failed_everywhere(&self, name: &str) -> Option<Vec<u64>> {
        self.agents
            .iter()
            .filter(|a| a.child.is_some())
            .map(|a| {
                let text = fs::read_to_string(self.dir.join(format!("failed.{}", a.name))).ok()?;
                text.lines().find_map(|l| {
                    let (who, at) = l.split_once(' ')?;
                    (who == name).then(|| at.trim().parse().ok())?
                })
            })
            .collect()
    }

    /// Waits until every running agent noted `name` failed; the latest of those times.
    pub fn wait_failed(&self, name: &str, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(times) = self.failed_everywhere(name) {
                return times.into_iter().max();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl SerfAgent {
    /// Members this agent lists alive (itself included); 0 when it does not answer.
    pub fn alive_members(&self) -> usize {
        let Some(serf) = serf_program() else {
            return 0;
        };
        Command::new(serf)
            .args(["members", "-status=alive"])
            .arg(format!("-rpc-addr={}", self.rpc))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or(0, |o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count()
            })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for SerfCluster {
    fn drop(&mut self) {
        for i in 0..self.agents.len() {
            self.kill(i);
        }
    }
}
