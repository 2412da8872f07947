//! A packet capture on the lab's fabric (the "wire" between nodes) during a step, to show
//! what an observer of the network sees of mesh traffic.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use weft_lab::Lab;

pub struct Capture {
    child: Child,
    file: PathBuf,
}

/// What the capture saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub packets: usize,
    /// Packets to or from port 15008 (HBONE: TLS).
    pub hbone: usize,
    /// Plaintext HTTP anywhere in the captured bytes (request lines or the user header).
    pub plaintext_http: usize,
}

impl Capture {
    pub fn start(lab: &Lab) -> anyhow::Result<Self> {
        let file = lab.paths.root.join("demo-fabric.pcap");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.plan.fabric_netns))
            // -Z root: tcpdump would drop to its own user before opening the file.
            .args([
                "tcpdump",
                "-Z",
                "root",
                "--immediate-mode",
                "-i",
                "any",
                "-U",
            ])
            .args(["-s", "0", "-w"])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tcpdump on the fabric (cargo xtask setup installs it)")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self { child, file })
    }

    pub fn stop(mut self) -> anyhow::Result<Seen> {
        std::thread::sleep(Duration::from_millis(300));
        // SIGINT so tcpdump closes its file properly.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let raw = std::fs::read(&self.file).context("reading the capture")?;
        let listing = Command::new("tcpdump")
            .args(["-nn", "-q", "-r"])
            .arg(&self.file)
            .output()
            .context("reading the capture with tcpdump")?;
        let text = String::from_utf8_lossy(&listing.stdout);
        let packets = text.lines().filter(|l| l.contains(" > ")).count();
        let hbone = text
            .lines()
            .filter(|l| l.contains(".15008 >") || l.contains(".15008:"))
            .count();
        let plaintext_http = [&b"HTTP/1.1"[..], b"end-user", b"GET /"]
            .iter()
            .map(|needle| raw.windows(needle.len()).filter(|w| w == needle).count())
            .sum();
        let _ = std::fs::remove_file(&self.file);
        Ok(Seen {
            packets,
            hbone,
            plaintext_http,
        })
    }
}
