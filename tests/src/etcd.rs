//! A real etcd server (Debian's `etcd-server`, which `.ci/run` installs) for one test, on
//! free loopback ports with its data in a temporary folder; killed and removed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{http_request, installed_program, wait_until};

/// One running etcd.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its client URL (`http://127.0.0.1:<port>`).
    pub url: String,
    client_port: u16,
}

impl Etcd {
    /// Starts a one-member etcd and waits until it is healthy.
    pub fn start() -> Self {
        Self::start_also_on(None)
    }

    /// Starts a one-member etcd that also serves clients on `ip` (an address of a link to a
    /// namespace the test made: [`Etcd::url_on`]), and waits until it is healthy.
    pub fn start_also_on(ip: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mhc-etcd-")
            .tempdir()
            .expect("etcd folder");
        let (client_port, peer_port) = (crate::free_port(), crate::free_port());
        let url = format!("http://127.0.0.1:{client_port}");
        let listen = match ip {
            Some(ip) => format!("{url},http://{ip}:{client_port}"),
            None => url.clone(),
        };
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new(installed_program("etcd", "etcd-server"))
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &listen])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        let etcd = Etcd {
            child: Some(child),
            dir,
            url,
            client_port,
        };
        assert!(
            wait_until(Duration::from_secs(20), || etcd.healthy()),
            "etcd did not become healthy; log:\n{}",
            etcd.log()
        );
        etcd
    }

    /// Its client URL on `ip` (started with [`Etcd::start_also_on`] that address).
    pub fn url_on(&self, ip: &str) -> String {
        format!("http://{ip}:{}", self.client_port)
    }

    /// Whether etcd answers `/health` with `true`.
    pub fn healthy(&self) -> bool {
        http_request(
            ([127, 0, 0, 1], self.client_port).into(),
            "GET",
            "/health",
            &[],
        )
        .is_ok_and(|r| r.status == 200 && r.text().contains("true"))
    }

    /// Freezes the server (SIGSTOP): to its clients, etcd is unreachable.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        crate::signal_process(self.child.as_ref().expect("etcd runs").id(), sig);
    }

    /// etcd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
