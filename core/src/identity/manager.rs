//! Certificates per identity: requested on first use, kept, rotated before they expire.
//!
//! Each managed identity has one task that requests a certificate (new key, new CSR),
//! publishes it, sleeps until about half its lifetime (see [`RotationPolicy`]) and starts
//! again. Publishing replaces what the next TLS handshake will present; sessions already
//! established keep working with the certificate they were made with.
//!
//! With the trust bundle in force ([`IdentityManager::with_trust`]), two more rules keep a
//! root rotation from breaking connections:
//! - a certificate whose chain does not lead to the bundle is not published: peers trusting
//!   the same bundle would refuse it (a CA restarted with a new root before the bundle
//!   carries that root). The previous certificate stays while it is valid, and the request
//!   is retried as after any failure;
//! - when the bundle changes, a certificate that no longer chains to it (its root was
//!   removed) is renewed at once, and so is an identity whose last request failed that way,
//!   rather than at the next rotation.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::certificate::{CertificateError, WorkloadCertificate};
use super::issuer::{CertificateIssuer, CertificateRequest, IssueError};
use super::keys::{KeyError, WorkloadKey};
use super::rotation::{RotationPolicy, random_unit};
use super::spiffe::Identity;
use super::trust::{LiveTrust, TrustBundle};

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The lifetime asked of the CA for each certificate (Istio's default: 24 h).
    pub requested_validity: Duration,
    pub rotation: RotationPolicy,
    /// How long one request to the CA may take.
    pub issue_timeout: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            requested_validity: Duration::from_secs(24 * 3600),
            rotation: RotationPolicy::default(),
            issue_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("preparing a request for {identity}: {source}")]
    Key {
        identity: Identity,
        source: KeyError,
    },
    #[error(transparent)]
    Certificate(Arc<CertificateError>),
    #[error("the CA did not answer for {identity} within {timeout:?}")]
    Timeout {
        identity: Identity,
        timeout: Duration,
    },
    #[error("{0} is no longer managed")]
    Forgotten(Identity),
    #[error(
        "the certificate issued for {identity} does not chain to the trust bundle ({reason}); \
         the CA signs under a root the bundle does not hold yet"
    )]
    Untrusted { identity: Identity, reason: String },
}

#[derive(Clone, Default)]
struct CertState {
    cert: Option<Arc<WorkloadCertificate>>,
    /// The last request's failure, cleared by the next success.
    error: Option<IdentityError>,
}

impl CertState {
    /// A fetch can be answered: with a certificate not yet expired, or with the error that
    /// stands in the way of having one.
    fn settled(&self, now: SystemTime) -> bool {
        self.usable(now).is_some() || self.error.is_some()
    }

    fn usable(&self, now: SystemTime) -> Option<&Arc<WorkloadCertificate>> {
        // not_before is not checked: a CA clock slightly ahead is the peer's problem to
        // tolerate, and waiting here would not make it better.
        self.cert.as_ref().filter(|c| now < c.not_after())
    }
}

struct Entry {
    state: watch::Receiver<CertState>,
    task: AbortHandle,
    /// Wakes the task to request a certificate now.
    renew: Arc<Notify>,
}

struct Inner {
    issuer: Arc<dyn CertificateIssuer>,
    config: ManagerConfig,
    entries: Mutex<HashMap<Identity, Entry>>,
    trust: Option<LiveTrust>,
    /// The task following the trust bundle's changes.
    follower: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let entries = self
            .entries
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (_, entry) in entries.drain() {
            entry.task.abort();
        }
        if let Some(follower) = self
            .follower
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            follower.abort();
        }
    }
}

/// Why a held certificate should be renewed now under `bundle`, if it should: it no longer
/// chains to the bundle, or the last request failed for want of a chain to it.
fn renewal_reason(state: &CertState, bundle: &TrustBundle, now: SystemTime) -> Option<String> {
    if let Some(IdentityError::Untrusted { .. }) = &state.error {
        return Some("the last certificate issued did not chain to the previous bundle".into());
    }
    let cert = state.cert.as_ref()?;
    cert.chains_to(bundle, now)
        .err()
        .map(|e| format!("the certificate held no longer chains to the trust bundle: {e}"))
}

/// Keeps a certificate for each identity asked for. Cheap to clone; the rotation tasks stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct IdentityManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for IdentityManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityManager")
            .field("identities", &self.identities())
            .finish_non_exhaustive()
    }
}

impl IdentityManager {
    pub fn new(issuer: Arc<dyn CertificateIssuer>, config: ManagerConfig) -> Self {
        Self::build(issuer, config, None)
    }

    /// A manager that publishes only certificates chaining to the trust bundle in force,
    /// and renews at once those a change of the bundle leaves without a root (module
    /// documentation). Must be called inside a tokio runtime.
    pub fn with_trust(
        issuer: Arc<dyn CertificateIssuer>,
        config: ManagerConfig,
        trust: LiveTrust,
    ) -> Self {
        let manager = Self::build(issuer, config, Some(trust.clone()));
        let follower = tokio::spawn(follow_trust(Arc::downgrade(&manager.inner), trust));
        *crate::sync::lock(&manager.inner.follower) = Some(follower.abort_handle());
        manager
    }

    fn build(
        issuer: Arc<dyn CertificateIssuer>,
        config: ManagerConfig,
        trust: Option<LiveTrust>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                issuer,
                config,
                entries: Mutex::new(HashMap::new()),
                trust,
                follower: Mutex::new(None),
            }),
        }
    }

    /// Wakes the task of every identity `renewal_reason` names under `bundle`; returns
    /// them.
    fn renew_untrusted(&self, bundle: &TrustBundle) -> Vec<Identity> {
        let now = SystemTime::now();
        let mut renewed = Vec::new();
        for (identity, entry) in self.entries().iter() {
            let reason = renewal_reason(&entry.state.borrow(), bundle, now);
            if let Some(reason) = reason {
                tracing::info!(%identity, %reason, "trust bundle changed: renewing the certificate now");
                entry.renew.notify_one();
                renewed.push(identity.clone());
            }
        }
        renewed
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Entry>> {
        // Nothing panics while holding the lock, so the map is consistent even if poisoned.
        crate::sync::lock(&self.inner.entries)
    }

    /// A certificate for the identity, requesting one first if it is not managed yet (then
    /// it is kept and rotated from now on). Fails fast with the last error when the CA
    /// refused or could not be reached and no valid certificate is at hand; the background
    /// task keeps retrying.
    pub async fn fetch(
        &self,
        identity: &Identity,
    ) -> Result<Arc<WorkloadCertificate>, IdentityError> {
        self.fetch_within(identity, Duration::ZERO).await
    }

    /// [`fetch`](Self::fetch), but a failure does not answer at once: the background
    /// task's retries (from 250 ms, doubling) get up to `patience` to obtain a certificate.
    /// For a connection to a pod that has just started: the CA may not see the pod on this
    /// node yet (its view of the cluster lags the agent's) and refuses until it does.
    pub async fn fetch_within(
        &self,
        identity: &Identity,
        patience: Duration,
    ) -> Result<Arc<WorkloadCertificate>, IdentityError> {
        let forgotten = || IdentityError::Forgotten(identity.clone());
        let mut state = self.watch(identity);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            {
                let settled = state
                    .wait_for(|s| s.settled(SystemTime::now()))
                    .await
                    .map_err(|_| forgotten())?;
                match (settled.usable(SystemTime::now()), &settled.error) {
                    (Some(cert), _) => return Ok(Arc::clone(cert)),
                    (None, Some(error)) if tokio::time::Instant::now() >= deadline => {
                        return Err(error.clone());
                    }
                    (None, Some(_)) => {}
                    // `settled` holds one or the other; expiry between the two clock reads
                    // is the only way here.
                    (None, None) => return Err(forgotten()),
                }
            }
            // The next attempt's outcome; past the deadline, the state as it is then answers
            // (the match above, once more).
            if let Ok(Err(_)) = tokio::time::timeout_at(deadline, state.changed()).await {
                return Err(forgotten());
            }
        }
    }

    /// The certificate held for the identity right now, without waiting or requesting.
    /// This is what handshakes present.
    pub fn current(&self, identity: &Identity) -> Option<Arc<WorkloadCertificate>> {
        self.entries()
            .get(identity)
            .and_then(|e| e.state.borrow().cert.clone())
    }

    /// Stops managing the identity (its last pod left the node); its certificate is dropped.
    pub fn forget(&self, identity: &Identity) {
        if let Some(entry) = self.entries().remove(identity) {
            entry.task.abort();
            tracing::info!(%identity, "stopped managing the certificate");
        }
    }

    pub fn identities(&self) -> Vec<Identity> {
        let mut ids: Vec<_> = self.entries().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Every certificate held, for the admin endpoint.
    pub fn certificates(&self) -> Vec<Arc<WorkloadCertificate>> {
        let mut certs: Vec<_> = self
            .entries()
            .values()
            .filter_map(|e| e.state.borrow().cert.clone())
            .collect();
        certs.sort_by(|a, b| a.identity().cmp(b.identity()));
        certs
    }

    fn watch(&self, identity: &Identity) -> watch::Receiver<CertState> {
        let mut entries = self.entries();
        if let Some(entry) = entries.get(identity) {
            return entry.state.clone();
        }
        let (tx, rx) = watch::channel(CertState::default());
        let renew = Arc::new(Notify::new());
        let span = tracing::info_span!("certificate", identity = %identity);
        let task = tokio::spawn(
            maintain(
                identity.clone(),
                Arc::clone(&self.inner.issuer),
                self.inner.config.clone(),
                self.inner.trust.clone(),
                tx,
                Arc::clone(&renew),
            )
            .instrument(span),
        )
        .abort_handle();
        entries.insert(
            identity.clone(),
            Entry {
                state: rx.clone(),
                task,
                renew,
            },
        );
        rx
    }
}

/// Re-checks the certificates at every change of the trust bundle, until the manager is
/// gone.
async fn follow_trust(manager: std::sync::Weak<Inner>, trust: LiveTrust) {
    let mut changes = trust.subscribe();
    while changes.changed().await.is_ok() {
        let Some(inner) = manager.upgrade() else {
            return;
        };
        IdentityManager { inner }.renew_untrusted(&trust.current());
    }
}

/// Requests, publishes and rotates the certificate of one identity until aborted.
async fn maintain(
    identity: Identity,
    issuer: Arc<dyn CertificateIssuer>,
    config: ManagerConfig,
    trust: Option<LiveTrust>,
    state: watch::Sender<CertState>,
    renew: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let issued = issue_once(&identity, issuer.as_ref(), &config).await;
        let issued = match (issued, &trust) {
            (Ok(cert), Some(trust)) => match cert.chains_to(&trust.current(), SystemTime::now()) {
                Ok(()) => Ok(cert),
                Err(e) => Err(IdentityError::Untrusted {
                    identity: identity.clone(),
                    reason: e.to_string(),
                }),
            },
            (issued, _) => issued,
        };
        let delay = match issued {
            Ok(cert) => {
                failures = 0;
                let delay = config.rotation.refresh_delay(
                    cert.not_before(),
                    cert.not_after(),
                    SystemTime::now(),
                    random_unit(),
                );
                tracing::info!(
                    serial = %cert.serial(),
                    not_after = ?cert.not_after(),
                    root = cert.root_fingerprint().unwrap_or_default(),
                    rotate_in = ?delay,
                    "certificate issued"
                );
                state.send_modify(|s| {
                    s.cert = Some(Arc::new(cert));
                    s.error = None;
                });
                delay
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let remaining = state.borrow().cert.as_ref().map(|c| {
                    c.not_after()
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                });
                let delay = config.rotation.retry_delay(failures, remaining);
                tracing::warn!(%error, failures, retry_in = ?delay, "certificate request failed");
                state.send_modify(|s| s.error = Some(error));
                delay
            }
        };
        // A renewal asked for meanwhile (the trust bundle changed) cuts the wait short.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = renew.notified() => {}
        }
    }
}

async fn issue_once(
    identity: &Identity,
    issuer: &dyn CertificateIssuer,
    config: &ManagerConfig,
) -> Result<WorkloadCertificate, IdentityError> {
    let key_error = |source| IdentityError::Key {
        identity: identity.clone(),
        source,
    };
    let key = WorkloadKey::generate().map_err(key_error)?;
    let csr_pem = key.csr_pem(identity).map_err(key_error)?;
    let request = CertificateRequest {
        identity: identity.clone(),
        csr_pem,
        validity: config.requested_validity,
    };
    let chain = tokio::time::timeout(config.issue_timeout, issuer.issue(request))
        .await
        .map_err(|_| IdentityError::Timeout {
            identity: identity.clone(),
            timeout: config.issue_timeout,
        })??;
    WorkloadCertificate::from_issued(identity.clone(), key, chain)
        .map_err(|e| IdentityError::Certificate(Arc::new(e)))
}
