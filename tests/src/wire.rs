//! Packets and bytes that local processes send from given ports, counted by the kernel
//! (nftables), so two systems are measured the same way whatever they count themselves. Needs
//! root and the `nft` tool (Debian package `nftables`); [`PortCounters::new`] says why not.

use std::process::Command;

/// One nftables table whose output chain counts what leaves each listed port; deleted on drop.
#[derive(Debug)]
pub struct PortCounters {
    table: String,
}

/// Packets and bytes counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets.
    pub packets: u64,
    /// Their bytes (IP packets, headers included).
    pub bytes: u64,
}

fn nft(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("nft");
    cmd.args(args);
    let out = if let Some(input) = input {
        use std::io::Write;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
        child.wait_with_output().map_err(|e| format!("nft: {e}"))?
    } else {
        cmd.output().map_err(|e| format!("nft: {e}"))?
    };
    if !out.status.success() {
        return Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PortCounters {
    /// Counts what leaves the UDP ports `udp`, and the TCP connections to or from the ports
    /// `tcp`, from now on; `tag`
    /// names the table (one per set of ports counted at once).
    ///
    /// # Errors
    /// Why the kernel cannot count here (no `nft`, not root, no nf_tables), in words.
    pub fn new(tag: &str, udp: &[u16], tcp: &[u16]) -> Result<Self, String> {
        let table = format!("mhc_{tag}_{}", std::process::id());
        let mut script = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
        );
        for p in udp {
            script.push_str(&format!("  udp sport {p} counter\n"));
        }
        // A TCP connection's packets leave the listening side from its port and the dialling
        // side (from a port of its own) to it: both are counted, each packet once.
        for p in tcp {
            script.push_str(&format!("  tcp sport {p} counter\n"));
            script.push_str(&format!("  tcp dport {p} counter\n"));
        }
        script.push_str(" }\n}\n");
        nft(&["-f", "-"], Some(&script))?;
        Ok(Self { table })
    }

    /// What was counted so far, all ports together.
    pub fn read(&self) -> Sent {
        let listing = nft(&["list", "table", "inet", &self.table], None).unwrap_or_default();
        let mut sent = Sent::default();
        for line in listing.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                match pair {
                    ["packets", n] => sent.packets += n.parse::<u64>().unwrap_or(0),
                    ["bytes", n] => sent.bytes += n.parse::<u64>().unwrap_or(0),
                    _ => {}
                }
            }
        }
        sent
    }
}

impl Drop for PortCounters {
    fn drop(&mut self) {
        let _ = nft(&["delete", "table", "inet", &self.table], None);
    }
}
