//! VirtualService `tls` routes through a waypoint, with real peers: `openssl s_client` in
//! `shop/client` (node-1) does TLS itself to the Service `front` (a `tls` port bound to the
//! waypoint); the waypoint reads the ClientHello and sends it, untouched, to the Service
//! its SNI names in the VirtualService: `tls-a` or `tls-b`, two `openssl s_server` pods on
//! node-2 presenting certificates for a.example.com and b.example.com. The client sees
//! the certificate of the server its SNI chose (the waypoint terminates nothing); an SNI
//! no rule names is closed.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use weft_e2e::{eventually, lab_up_manifests, manifests};
use weft_lab::Lab;
use weft_lab::manifest::Manifests;

const SETTLE: Duration = Duration::from_secs(20);

/// A self-signed certificate and key for `name`, and where they are; removed on drop.
struct Certificates {
    dir: PathBuf,
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Certificates {
    fn make(names: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("weft-tls-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("certificate directory");
        let certs = Self { dir };
        for name in names {
            let output = Command::new("openssl")
                .current_dir(&certs.dir)
                .args(["req", "-x509", "-sha256", "-nodes", "-days", "1"])
                .args(["-newkey", "rsa:2048", "-subj", &format!("/CN={name}")])
                .args([
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                ])
                .output()
                .expect("openssl runs (cargo xtask setup installs it)");
            assert!(
                output.status.success(),
                "openssl req: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        certs
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

fn lab(certs: &Certificates) -> Lab {
    let mut loaded = Manifests::load_dir(&manifests("tls_routes")).expect("the manifests");
    for container in loaded
        .pods
        .iter_mut()
        .flat_map(|p| p.spec.containers.iter_mut())
    {
        for word in container.command.iter_mut() {
            let file = match word.as_str() {
                "CERT_A" => "a.example.com.crt",
                "KEY_A" => "a.example.com.key",
                "CERT_B" => "b.example.com.crt",
                "KEY_B" => "b.example.com.key",
                _ => continue,
            };
            *word = certs.path(file);
        }
    }
    lab_up_manifests("tlsroute", &loaded, 2, true, &[])
}

/// The subject of the certificate `shop/client` is shown for `front:443` with `sni`;
/// empty when the handshake does not complete.
fn subject(lab: &Lab, sni: &str) -> String {
    let output = lab
        .pod_command("shop/client", "timeout")
        .expect("a command in the client pod")
        .args(["5", "openssl", "s_client", "-connect"])
        .arg("front.shop.svc.cluster.local:443")
        .args(["-servername", sni])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn the_sni_chooses_the_server_through_the_waypoint_and_tls_passes_through() {
    let certs = Certificates::make(&["a.example.com", "b.example.com"]);
    let lab = lab(&certs);
    assert!(
        eventually(SETTLE, || subject(&lab, "b.example.com")
            .contains("b.example.com")),
        "b.example.com reaches tls-b: {:?}",
        subject(&lab, "b.example.com")
    );
    for _ in 0..5 {
        assert!(subject(&lab, "a.example.com").contains("a.example.com"));
        assert!(subject(&lab, "b.example.com").contains("b.example.com"));
    }
    assert_eq!(
        subject(&lab, "c.example.com"),
        "",
        "an SNI no rule names is closed"
    );
}
