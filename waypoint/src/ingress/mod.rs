//! The ingress gateway: `weft-waypoint --mode ingress`. The same L7 engine as the waypoint
//! (path normalization, request authentication, authorization with CUSTOM, VirtualService
//! routing, DestinationRule traffic policy, HBONE upstreams), in front of the mesh instead
//! of inside it:
//!
//! - it listens where the Istio Gateways selecting its pod say ([`config`]), plaintext or
//!   TLS told apart by SNI, and where the HTTP listeners of the Gateway API Gateway it runs
//!   for (class `istio` or `weft`, deployed by weft's controller) say, and follows them as
//!   they change ([`listener`]);
//! - a request is routed by the VirtualServices bound to the Gateway whose server took it
//!   (or the HTTPRoutes attached to the Gateway API listener), by its `Host`, and 404 when
//!   nothing takes it;
//! - it proves its own SPIFFE identity upstream and reaches a Service through its
//!   waypoint when it has one (`crate::forward::endpoints::Reach`);
//! - AuthorizationPolicies and RequestAuthentications selecting its pod apply, and those
//!   attached by `targetRefs` to a Gateway API Gateway of its name.
pub mod config;
pub mod listener;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;
use tracing::{info, warn};
use weft_config::registry::Snapshot;

use self::config::{Identity, IngressConfig};
use self::listener::Listeners;
use crate::context::WaypointContext;

/// A running ingress gateway: its listeners follow the registry until told to stop.
pub struct Ingress {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
}

impl Ingress {
    /// Builds the listeners of the current configuration (binding them before returning,
    /// so a caller that then reports ready is), then follows every new one.
    pub async fn start(ctx: Arc<WaypointContext>, me: Identity) -> Self {
        let mut listeners = Listeners::new(ctx.clone());
        let open = listeners.open();
        // Subscribed first: a version published while the first configuration is built
        // is then seen as a change.
        let mut versions = ctx.registry.subscribe();
        let mut state = State::default();
        state.reconcile(&ctx, &me, &mut listeners);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = versions.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        state.reconcile(&ctx, &me, &mut listeners);
                    }
                    _ = stopped.changed() => {
                        listeners.stop_accepting();
                        break;
                    }
                }
            }
        });
        Self { task, stop, open }
    }

    /// Stops accepting connections; those being served go on.
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Connections being served.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Ends with the task following the registry (it only ends when stopped).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// What the last configuration was built from, and what it said, so that an unchanged
/// input is not rebuilt and an unchanged problem is not logged again.
#[derive(Default)]
struct State {
    /// Kept so that the objects whose addresses make up `inputs` stay alive.
    snapshot: Option<Arc<Snapshot>>,
    inputs: Vec<usize>,
    said: Vec<String>,
}

impl State {
    fn reconcile(&mut self, ctx: &Arc<WaypointContext>, me: &Identity, listeners: &mut Listeners) {
        let snapshot = ctx.registry.snapshot();
        let inputs = inputs(&snapshot, me);
        if self.snapshot.is_some() && inputs == self.inputs {
            return;
        }
        let config = config::build(&snapshot, me);
        self.report(&config);
        let wanted = config
            .listeners
            .into_iter()
            .map(|l| (l.address, l.serve))
            .collect();
        let failed = listeners.apply(wanted);
        listener::report_failures(&failed);
        // A port that could not be bound is tried again with the next configuration.
        self.inputs = if failed.is_empty() {
            inputs
        } else {
            Vec::new()
        };
        self.snapshot = Some(snapshot);
    }

    fn report(&mut self, config: &IngressConfig) {
        let mut said: Vec<String> = config
            .skipped
            .iter()
            .map(|s| {
                format!(
                    "Gateway {} spec.servers[{}] not served: {}",
                    s.gateway, s.index, s.reason
                )
            })
            .chain(config.unserved.iter().cloned())
            .chain(
                config
                    .refusing
                    .iter()
                    .map(|(server, error)| format!("{server} refuses TLS connections: {error}")),
            )
            .collect();
        said.sort();
        if said != self.said {
            for line in said.iter().filter(|l| !self.said.contains(l)) {
                warn!("{line}");
            }
            if said.is_empty() && !self.said.is_empty() {
                info!("every server of the selected Gateways is served");
            }
            self.said = said;
        }
    }
}

/// The identities (addresses) of what the configuration is built from: the pod, the
/// Gateways, the VirtualServices bound to them, the Services in front of the pod and the
/// Secrets of its namespace. Routes to destinations are resolved per request, so their
/// Services and DestinationRules are not among them.
fn inputs(snapshot: &Snapshot, me: &Identity) -> Vec<usize> {
    let Some(workload) = snapshot.workload(&me.namespace, &me.pod) else {
        return vec![0];
    };
    let mut inputs = vec![Arc::as_ptr(workload) as usize];
    // A Gateway API Gateway the pod runs for, and the routes (all of them: any may attach
    // or leave; they are resolved again when anything they depend on changes).
    if let Some(gateway) = config::served_gateway(snapshot, workload) {
        inputs.push(Arc::as_ptr(&gateway) as usize);
        inputs.extend(
            snapshot
                .route_resolutions()
                .map(|r| Arc::as_ptr(r) as usize),
        );
        // Its HTTPS listeners' Secrets (of any namespace) and the grants allowing them.
        inputs.extend(snapshot.secrets().map(|s| Arc::as_ptr(s) as usize));
        inputs.extend(snapshot.reference_grants().map(|g| Arc::as_ptr(g) as usize));
    }
    for gateway in snapshot.gateways() {
        inputs.push(Arc::as_ptr(gateway) as usize);
        let reference = weft_config::translate::gateway::GatewayRef::of(gateway);
        inputs.extend(
            snapshot
                .virtual_services_for_gateway(&reference)
                .iter()
                .map(|vs| Arc::as_ptr(vs) as usize),
        );
    }
    inputs.extend(
        snapshot
            .services()
            .filter(|s| {
                s.endpoints
                    .iter()
                    .any(|e| workload.ips.contains(&e.address))
            })
            .map(|s| Arc::as_ptr(s) as usize),
    );
    inputs.extend(
        snapshot
            .secrets_in(&me.namespace)
            .map(|s| Arc::as_ptr(s) as usize),
    );
    inputs
}
