//! A pod's first certificate while the CA still refuses it: the CA's view of the cluster
//! lags the agent's, so the first requests for a pod that has just started on the node are
//! refused until the CA sees it there. A connection to (or from) such a pod waits for the
//! background retries, for a bounded time, instead of failing at the first refusal — and
//! still fails, closed, when the CA keeps refusing.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use weft_core::ca::CertificateAuthority;
use weft_core::hbone::{HbonePool, HboneServerConfig, PoolConfig};
use weft_core::identity::{
    BoxFuture, CertificateIssuer, CertificateRequest, IdentityManager, IssueError, ManagerConfig,
};

/// A CA that refuses the first `refusals` requests for the server's identity, as a CA that
/// does not see the pod on the node yet does.
struct LaggingCa {
    ca: Arc<CertificateAuthority>,
    refusals: usize,
    asked: AtomicUsize,
}

impl CertificateIssuer for LaggingCa {
    fn issue(
        &self,
        request: CertificateRequest,
    ) -> BoxFuture<'_, Result<Vec<rustls::pki_types::CertificateDer<'static>>, IssueError>> {
        let asked = self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if request.identity == server_id() && asked < self.refusals {
                return Err(IssueError::Refused {
                    identity: request.identity.clone(),
                    reason: "no pod with that identity is scheduled on this node".into(),
                });
            }
            self.ca.issue(request).await
        })
    }
}

fn lagging(ca: &Arc<CertificateAuthority>, refusals: usize) -> IdentityManager {
    IdentityManager::new(
        Arc::new(LaggingCa {
            ca: Arc::clone(ca),
            refusals,
            asked: AtomicUsize::new(0),
        }),
        ManagerConfig::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_a_pod_the_ca_does_not_see_yet_waits_for_its_certificate() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        // Refused twice: the retries at 250 ms and 750 ms; the third request succeeds.
        let server_manager = lagging(&mesh.ca, 2);
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&server_manager, &mesh.trust, server_id()).await;
        let pool = HbonePool::new(
            mesh.client_manager.clone(),
            mesh.trust.clone(),
            PoolConfig::default(),
        );
        let started = Instant::now();
        let mut stream = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("the tunnel opens once the CA issues the pod's certificate");
        assert_eq!(echo(&mut stream, b"first").await, b"first");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited within the handshake's bound: {:?}",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_keeps_refusing_still_fails_the_connection() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let server_manager = lagging(&mesh.ca, usize::MAX);
        let (echo_addr, _echo) = echo_server().await;
        let config = HboneServerConfig {
            handshake_timeout: Duration::from_secs(2),
            ..HboneServerConfig::default()
        };
        let server = hbone_server_with(&server_manager, &mesh.trust, server_id(), config).await;
        let pool = HbonePool::new(
            mesh.client_manager.clone(),
            mesh.trust.clone(),
            PoolConfig::default(),
        );
        let outcome = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await;
        assert!(outcome.is_err(), "no certificate, no tunnel");
        assert!(server_manager.current(&server_id()).is_none());
    })
    .await;
}
