//! Trust bundle rotation in one process, with real TLS on loopback: the roots a client and a
//! server trust change while a tunnel runs, the CA starts signing under a new root, and
//! nothing is rebuilt or restarted. As in Istio's plug-in CA rotation: the bundle first
//! carries the old and the new root, then the CA signs under the new one, certificates move
//! to it at their rotation, and the old root leaves the bundle last.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use weft_core::ca::{CaConfig, CertificateAuthority};
use weft_core::hbone::{HbonePool, PoolConfig};
use weft_core::identity::{
    BoxFuture, CertificateIssuer, CertificateRequest, Identity, IdentityError, IdentityManager,
    IssueError, LiveTrust, ManagerConfig, TrustBundle, WorkloadKey,
};

/// The CA as agents see it across a restart: the same address, another signing root after
/// [`SwitchableCa::restart_with`].
struct SwitchableCa {
    ca: Mutex<Arc<CertificateAuthority>>,
    issued: AtomicUsize,
}

impl SwitchableCa {
    fn new(ca: &Arc<CertificateAuthority>) -> Arc<Self> {
        Arc::new(Self {
            ca: Mutex::new(Arc::clone(ca)),
            issued: AtomicUsize::new(0),
        })
    }

    fn restart_with(&self, ca: &Arc<CertificateAuthority>) {
        *self.ca.lock().expect("ca lock") = Arc::clone(ca);
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl CertificateIssuer for SwitchableCa {
    fn issue(
        &self,
        request: CertificateRequest,
    ) -> BoxFuture<'_, Result<Vec<rustls::pki_types::CertificateDer<'static>>, IssueError>> {
        let ca = Arc::clone(&self.ca.lock().expect("ca lock"));
        self.issued.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { ca.issue(request).await })
    }
}

fn new_ca() -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::generate(CaConfig::default()).expect("CA"))
}

fn fingerprint(bundle: &TrustBundle) -> String {
    bundle.roots()[0].fingerprint_sha256.clone()
}

/// The root the identity's current certificate chains to.
fn root_of(manager: &IdentityManager, identity: &Identity) -> Option<String> {
    manager.current(identity)?.root_fingerprint()
}

fn config(lifetime: Duration) -> ManagerConfig {
    ManagerConfig {
        requested_validity: lifetime,
        ..ManagerConfig::default()
    }
}

/// Echoes on `stream` every 100 ms until `done` holds, for at most `limit`.
async fn flow_until(
    stream: &mut weft_core::hbone::HboneStream,
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    let mut round = 0u32;
    while !done() {
        let payload = format!("{what} {round}").into_bytes();
        assert_eq!(
            echo(stream, &payload).await,
            payload,
            "the open stream stopped flowing while waiting for: {what}"
        );
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        round += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_opened_before_a_root_rotation_keeps_flowing_and_new_ones_succeed_throughout() {
    bounded(async {
        init_tracing();
        let (ca_a, ca_b) = (new_ca(), new_ca());
        let (a, b) = (ca_a.trust_bundle(), ca_b.trust_bundle());
        let both = a.merged(&b).expect("a+b");
        let issuer = SwitchableCa::new(&ca_a);
        // Each side has its own view of the bundle, as two agents each watch their file.
        let client_trust = LiveTrust::new(a.clone());
        let server_trust = LiveTrust::new(a.clone());
        // The server rotates every ~1 s, the client every ~6 s: for a while the server has
        // moved to the new root and the client has not.
        let client = IdentityManager::with_trust(
            issuer.clone(),
            config(Duration::from_secs(12)),
            client_trust.clone(),
        );
        let server = IdentityManager::with_trust(
            issuer.clone(),
            config(Duration::from_secs(2)),
            server_trust.clone(),
        );
        let (echo_addr, _echo) = echo_server().await;
        let fixture = hbone_server(&server, &server_trust, server_id()).await;
        let dial_new = |trust: &LiveTrust| {
            // A pool of its own: a new TCP connection and TLS handshake.
            HbonePool::new(client.clone(), trust.clone(), PoolConfig::default())
        };
        let long_pool = dial_new(&client_trust);
        let mut long = long_pool
            .connect(connect_request(fixture.addr, echo_addr), dial)
            .await
            .expect("the long stream opens under the old root");
        assert_eq!(root_of(&client, &client_id()), Some(fingerprint(&a)));
        assert_eq!(echo(&mut long, b"before").await, b"before");

        // 1. The bundle carries both roots, everywhere.
        assert!(client_trust.replace(both.clone()));
        assert!(server_trust.replace(both.clone()));
        // A new stream from the pool holding the tunnel does not ride it (the certificates
        // are the same): that connection was verified under a bundle no longer in force,
        // and a removed root must not keep carrying new streams.
        let mut again = long_pool
            .connect(connect_request(fixture.addr, echo_addr), dial)
            .await
            .expect("a new stream from the same pool");
        assert_ne!(again.info().connection_id, long.info().connection_id);
        assert_eq!(echo(&mut again, b"again").await, b"again");
        drop(again);
        // 2. The CA restarts with the new root.
        issuer.restart_with(&ca_b);
        // 3. Certificates move to the new root at their rotation; the server's comes first.
        flow_until(
            &mut long,
            Duration::from_secs(8),
            "the server re-issued under the new root",
            || root_of(&server, &server_id()) == Some(fingerprint(&b)),
        )
        .await;
        assert_eq!(
            root_of(&client, &client_id()),
            Some(fingerprint(&a)),
            "the client still holds its old-root certificate"
        );
        // An old-root client and a new-root server, both trusting both roots: a new
        // connection succeeds.
        let mut mixed = dial_new(&client_trust)
            .connect(connect_request(fixture.addr, echo_addr), dial)
            .await
            .expect("an old-root client reaches a new-root server");
        assert_eq!(echo(&mut mixed, b"mixed").await, b"mixed");
        let client_cert = client.current(&client_id()).expect("client cert");
        assert_eq!(mixed.info().local_serial, *client_cert.serial());
        assert_eq!(client_cert.root_fingerprint(), Some(fingerprint(&a)));
        let server_cert = server.current(&server_id()).expect("server cert");
        assert_eq!(server_cert.root_fingerprint(), Some(fingerprint(&b)));
        assert_eq!(mixed.info().peer.serial, *server_cert.serial());
        drop(mixed);

        flow_until(
            &mut long,
            Duration::from_secs(12),
            "the client re-issued under the new root",
            || root_of(&client, &client_id()) == Some(fingerprint(&b)),
        )
        .await;

        // 4. Every certificate is under the new root: the old root leaves the bundles.
        assert!(client_trust.replace(b.clone()));
        assert!(server_trust.replace(b.clone()));
        // The tunnel made with old-root certificates on both sides still carries bytes:
        // an established session is not verified again.
        assert_eq!(echo(&mut long, b"after").await, b"after");
        let mut fresh = dial_new(&client_trust)
            .connect(connect_request(fixture.addr, echo_addr), dial)
            .await
            .expect("a new connection under the new root alone");
        assert_eq!(echo(&mut fresh, b"fresh").await, b"fresh");

        // The bundles are really in force: a client that still trusts the old root alone
        // refuses the server now.
        let stale = dial_new(&LiveTrust::new(a.clone()))
            .connect(connect_request(fixture.addr, echo_addr), dial)
            .await;
        assert!(
            stale.is_err(),
            "a client trusting only the removed root must refuse the new-root server"
        );
        assert!(issuer.issued() >= 4, "rotations happened");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_client_trusts_a_restarted_ca_once_the_bundle_holds_its_root() {
    bounded(async {
        init_tracing();
        let (ca_a, ca_b) = (new_ca(), new_ca());
        // The CA now serves under root B; this agent's bundle has root A only.
        let (ca_addr, _ca) = serve_ca(Arc::clone(&ca_b)).await;
        let trust = LiveTrust::new(ca_a.trust_bundle());
        let issuer = grpc_issuer(ca_addr, TOKEN_A, &trust);
        let request = || CertificateRequest {
            identity: client_id(),
            csr_pem: WorkloadKey::generate()
                .expect("key")
                .csr_pem(&client_id())
                .expect("csr"),
            validity: Duration::from_secs(3600),
        };
        let refused = issuer.issue(request()).await;
        assert!(
            matches!(refused, Err(IssueError::Unavailable { .. })),
            "a CA under a root the bundle lacks is not trusted: {refused:?}"
        );
        // The bundle gains root B: the same client, not rebuilt, now trusts the CA.
        assert!(
            trust.replace(
                ca_a.trust_bundle()
                    .merged(&ca_b.trust_bundle())
                    .expect("a+b")
            )
        );
        let chain = issuer.issue(request()).await.expect("issued by the CA");
        assert_eq!(chain.last(), ca_b.trust_bundle().certificates().first());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_under_a_root_the_bundle_lacks_is_not_used() {
    bounded(async {
        init_tracing();
        let (ca_a, ca_b) = (new_ca(), new_ca());
        let a = ca_a.trust_bundle();

        // No certificate yet, and the CA signs under a root this bundle lacks: the fetch
        // fails and says why.
        let trust = LiveTrust::new(a.clone());
        let manager = IdentityManager::with_trust(
            SwitchableCa::new(&ca_b),
            config(Duration::from_secs(3600)),
            trust.clone(),
        );
        match manager.fetch(&client_id()).await {
            Err(IdentityError::Untrusted { identity, reason }) => {
                assert_eq!(identity, client_id());
                assert!(!reason.is_empty());
            }
            other => panic!("expected an untrusted-chain error, got {other:?}"),
        }
        assert!(manager.current(&client_id()).is_none(), "nothing published");
        // The bundle gains the CA's root: a certificate follows.
        assert!(trust.replace(a.merged(&ca_b.trust_bundle()).expect("a+b")));
        let deadline = Instant::now() + Duration::from_secs(5);
        while root_of(&manager, &client_id()) != Some(fingerprint(&ca_b.trust_bundle())) {
            assert!(
                Instant::now() < deadline,
                "no certificate once the root is trusted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // With a certificate held: a rotation that brings an untrusted chain keeps the
        // previous certificate.
        let issuer = SwitchableCa::new(&ca_a);
        let manager = IdentityManager::with_trust(
            issuer.clone(),
            config(Duration::from_secs(2)),
            LiveTrust::new(a.clone()),
        );
        let first = manager
            .fetch(&client_id())
            .await
            .expect("first certificate");
        issuer.restart_with(&ca_b);
        let deadline = Instant::now() + Duration::from_secs(10);
        while issuer.issued() < 3 {
            assert!(
                Instant::now() < deadline,
                "the manager did not try to rotate"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = manager.current(&client_id()).expect("still a certificate");
        assert_eq!(
            held.serial(),
            first.serial(),
            "the old-root certificate is kept"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_root_leaves_the_bundle_is_renewed_at_once() {
    bounded(async {
        init_tracing();
        let (ca_a, ca_b) = (new_ca(), new_ca());
        let (a, b) = (ca_a.trust_bundle(), ca_b.trust_bundle());
        let issuer = SwitchableCa::new(&ca_a);
        let trust = LiveTrust::new(a.merged(&b).expect("a+b"));
        // An hour: its rotation is half an hour away.
        let manager = IdentityManager::with_trust(
            issuer.clone(),
            config(Duration::from_secs(3600)),
            trust.clone(),
        );
        let first = manager.fetch(&client_id()).await.expect("certificate");
        assert_eq!(first.root_fingerprint(), Some(fingerprint(&a)));
        issuer.restart_with(&ca_b);
        // The old root is removed while this certificate still chains to it (the operator
        // did not wait for the rotation): it is renewed now, not in half an hour.
        assert!(trust.replace(b.clone()));
        let deadline = Instant::now() + Duration::from_secs(3);
        while root_of(&manager, &client_id()) != Some(fingerprint(&b)) {
            assert!(
                Instant::now() < deadline,
                "not renewed at the bundle change"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A bundle change that leaves the certificate trusted renews nothing.
        let issued = issuer.issued();
        assert!(trust.replace(b.merged(&a).expect("b+a")));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(issuer.issued(), issued);
    })
    .await;
}
