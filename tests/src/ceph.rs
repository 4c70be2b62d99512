//! A real S3 service for one test: a one-node Ceph cluster (a monitor, one OSD on memstore)
//! with its RADOS gateway, from Debian's `ceph-mon`, `ceph-osd` and `radosgw` packages (which
//! `.ci/run` installs), on free loopback ports with every file in a temporary folder. No
//! authentication inside the cluster (it is reachable only on loopback); the gateway checks
//! S3 signatures of a user made for the test. Every process is killed on drop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{free_port, http_request, installed_program, wait_until};

/// How long the cluster may take to answer at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running one-node Ceph cluster with its S3 gateway.
#[derive(Debug)]
pub struct Ceph {
    children: Vec<(&'static str, Child)>,
    dir: tempfile::TempDir,
    /// The gateway's URL (`http://127.0.0.1:<port>`).
    pub url: String,
    gateway_port: u16,
    /// The S3 access key of the test's user.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
}

fn random_token(len: usize) -> String {
    let mut rng = fastrand::Rng::new();
    (0..len)
        .map(|_| rng.alphanumeric().to_ascii_uppercase())
        .collect()
}

impl Ceph {
    /// Starts the monitor, the OSD and the gateway, makes an S3 user and waits until the
    /// gateway answers.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mhc-ceph-")
            .tempdir()
            .expect("ceph folder");
        let (mon_port, gateway_port) = (free_port(), free_port());
        let mut ceph = Ceph {
            children: Vec::new(),
            url: format!("http://127.0.0.1:{gateway_port}"),
            gateway_port,
            access_key: random_token(20),
            secret_key: random_token(40),
            dir,
        };
        let root = ceph.dir.path().to_owned();
        for sub in ["mon", "osd", "run", "log"] {
            std::fs::create_dir_all(root.join(sub)).expect("ceph folders");
        }
        let fsid = uuid();
        let conf = config(&root, &fsid, mon_port, gateway_port);
        std::fs::write(root.join("ceph.conf"), conf).expect("ceph.conf");

        // The monitor: a keyring for its own key (asked for even without authentication), a
        // map of one monitor, its store.
        ceph.tool(
            "ceph-authtool",
            "ceph-common",
            &[
                "--create-keyring",
                "keyring",
                "--gen-key",
                "-n",
                "mon.",
                "--cap",
                "mon",
                "allow *",
            ],
        );
        let mon_addr = format!("v1:127.0.0.1:{mon_port}");
        ceph.tool(
            "monmaptool",
            "ceph-base",
            &[
                "--create", "--add", "a", &mon_addr, "--fsid", &fsid, "monmap",
            ],
        );
        ceph.tool(
            "ceph-mon",
            "ceph-mon",
            &[
                "-c",
                "ceph.conf",
                "--mkfs",
                "-i",
                "a",
                "--monmap",
                "monmap",
                "--keyring",
                "keyring",
            ],
        );
        ceph.daemon("ceph-mon", "ceph-mon", &["-i", "a"]);

        // One OSD on memstore (RAM, bounded by memstore_device_bytes).
        let created = ceph.ceph(&["osd", "create"]);
        assert_eq!(String::from_utf8_lossy(&created.stdout).trim(), "0");
        ceph.tool(
            "ceph-osd",
            "ceph-osd",
            &["-c", "ceph.conf", "-i", "0", "--mkfs"],
        );
        ceph.daemon("ceph-osd", "ceph-osd", &["-i", "0"]);
        let osd_up = |ceph: &Ceph, within| {
            wait_until(within, || {
                let stat = ceph.ceph(&["osd", "stat"]);
                String::from_utf8_lossy(&stat.stdout).contains("1 up")
            })
        };
        // An OSD has been seen to hang once at boot (after `log_to_monitors`, on a loaded
        // machine) and to boot when started again: one restart, said in the output, before
        // the test gives up.
        if !osd_up(&ceph, STEP_TIMEOUT / 2) {
            eprintln!(
                "ceph: the OSD is not up after {:?}; restarting it once\n{}",
                STEP_TIMEOUT / 2,
                ceph.logs()
            );
            ceph.stop("ceph-osd");
            ceph.daemon("ceph-osd", "ceph-osd", &["-i", "0"]);
            assert!(
                osd_up(&ceph, STEP_TIMEOUT),
                "the OSD did not come up\n{}",
                ceph.logs()
            );
        }

        // The gateway creates its pools on its first start.
        ceph.daemon("radosgw", "radosgw", &["-n", "client.rgw"]);
        assert!(
            wait_until(STEP_TIMEOUT, || http_request(
                ([127, 0, 0, 1], ceph.gateway_port).into(),
                "GET",
                "/",
                &[],
            )
            .is_ok_and(|r| r.status == 200)),
            "the RADOS gateway did not answer\n{}",
            ceph.logs()
        );
        let user = ceph.radosgw_admin(&[
            "user",
            "create",
            "--uid",
            "mhc-test",
            "--display-name",
            "mhc test",
            "--access-key",
            &ceph.access_key,
            "--secret-key",
            &ceph.secret_key,
        ]);
        assert!(
            user.status.success(),
            "radosgw-admin user create: {}",
            String::from_utf8_lossy(&user.stderr)
        );
        ceph
    }

    /// The folder every file of the cluster is in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `rados <args>` against the cluster (objects as the gateway stores them).
    pub fn rados(&self, args: &[&str]) -> Output {
        let mut all = vec!["-c", "ceph.conf"];
        all.extend_from_slice(args);
        self.run("rados", "ceph-common", &all)
    }

    /// `radosgw-admin <args>` against the cluster.
    pub fn radosgw_admin(&self, args: &[&str]) -> Output {
        let mut all = vec!["-c", "ceph.conf"];
        all.extend_from_slice(args);
        self.run("radosgw-admin", "radosgw", &all)
    }

    /// `ceph <args>` against the cluster.
    pub fn ceph(&self, args: &[&str]) -> Output {
        let mut all = vec!["-c", "ceph.conf", "--connect-timeout", "10"];
        all.extend_from_slice(args);
        self.run("ceph", "ceph-common", &all)
    }

    fn run(&self, program: &str, package: &str, args: &[&str]) -> Output {
        Command::new(installed_program(program, package))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// Runs a set-up step that must succeed.
    fn tool(&self, program: &str, package: &str, args: &[&str]) {
        let out = self.run(program, package, args);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a daemon in the foreground (so that it is a child of the test, and dies with
    /// it); it logs into `log/`.
    fn daemon(&mut self, program: &'static str, package: &str, args: &[&str]) {
        let out = std::fs::File::create(self.path().join(format!("log/{program}.out")))
            .expect("daemon output");
        let child = Command::new(installed_program(program, package))
            .args(["-f", "-c", "ceph.conf"])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("output handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        self.children.push((program, child));
    }

    /// Stops the daemon `program` started last (killed and reaped).
    fn stop(&mut self, program: &str) {
        if let Some(at) = self.children.iter().rposition(|(p, _)| *p == program) {
            let (_, mut child) = self.children.remove(at);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The tail of every daemon's log, for a failing assertion (without the monitor's record
    /// of the status queries the test's waits make, which would fill it).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.path().join("log")) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text
                    .lines()
                    .rev()
                    .filter(|line| !line.contains("\"prefix\": \"osd stat\""))
                    .take(25)
                    .collect();
                let _ = writeln!(all, "--- {}", entry.path().display());
                for line in tail.iter().rev() {
                    let _ = writeln!(all, "{line}");
                }
            }
        }
        all
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        // The gateway first, the monitor last: each goes before what it depends on.
        while let Some((_, mut child)) = self.children.pop() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A random UUID (version 4) for the cluster's fsid.
fn uuid() -> String {
    let mut rng = fastrand::Rng::new();
    let b: Vec<u8> = (0..16).map(|_| rng.u8(..)).collect();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The cluster's configuration: one monitor and one OSD on loopback, pools of one replica,
/// no authentication, every path inside `root`.
fn config(root: &Path, fsid: &str, mon_port: u16, gateway_port: u16) -> String {
    let root: PathBuf = root.to_owned();
    let r = root.display();
    format!(
        "[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
auth cluster required = none
auth service required = none
auth client required = none
ms bind msgr2 = false
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd crush chooseleaf type = 0
run dir = {r}/run
log file = {r}/log/$name.log
admin socket = {r}/run/$name.asok
keyring = {r}/keyring
mon data = {r}/mon
osd data = {r}/osd
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{gateway_port}
rgw data = {r}/rgw
"
    )
}
