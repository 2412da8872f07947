//! CUSTOM AuthorizationPolicies with a `selector`, on the connections into an enrolled pod:
//! the agent asks the provider as Envoy's network ext_authz filter does (gRPC `Check` with
//! the source and destination peers; Istio's ztunnel has no CUSTOM, and weft does not fail
//! open). The call goes out as the destination pod's own outbound connection would: from
//! inside the pod, over HBONE with the pod's identity to a provider in the mesh, plain
//! TCP otherwise. An HTTP provider cannot check a connection: refused, with a warning.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use weft_config::authz::ext_authz::{ProviderService, provider_service, provider_settings};
use weft_config::registry::{Registry, Snapshot};
use weft_core::ext_authz::{BoxIo, Client, Connect, Connecting, Settings};
use weft_core::hbone::{ConnectRequest, HbonePool};
use weft_core::identity::Identity;
use weft_host::netns_sockets::NetnsSockets;

use crate::proxy::connect_from_pod;
use crate::proxy::resolve::{NextHop, pick, resolve};

/// The pod a connection goes into: where the check is made from.
#[derive(Clone)]
pub struct CheckFrom {
    pub sockets: NetnsSockets,
    pub pod_ip: IpAddr,
}

struct PodConnector {
    registry: Registry,
    pool: HbonePool,
    from: CheckFrom,
    identity: Identity,
    settings: Settings,
}

impl Connect for PodConnector {
    fn connect(&self) -> Connecting {
        let snapshot = self.registry.snapshot();
        let settings = self.settings.clone();
        let pool = self.pool.clone();
        let from = self.from.clone();
        let identity = self.identity.clone();
        Box::pin(async move {
            let refused =
                |reason: String| std::io::Error::new(std::io::ErrorKind::NotFound, reason);
            let target = match provider_service(&snapshot, &settings).map_err(refused)? {
                ProviderService::Service(service) => {
                    let address = match service.vips.first() {
                        Some(vip) => SocketAddr::new(*vip, settings.port),
                        // Headless: one of its ready endpoints.
                        None => {
                            let ready: Vec<_> =
                                service.endpoints.iter().filter(|e| e.ready).collect();
                            let endpoint = ready
                                .get(pick(ready.len()) % ready.len().max(1))
                                .ok_or_else(|| {
                                    refused(format!("no ready endpoint of {}", service.hostname))
                                })?;
                            let port = service
                                .endpoint_port(settings.port, endpoint)
                                .unwrap_or(settings.port);
                            SocketAddr::new(endpoint.address, port)
                        }
                    };
                    resolve(&snapshot, address, pick)
                }
                ProviderService::External(targets) => {
                    let (host, port) = targets
                        .get(pick(targets.len()) % targets.len().max(1))
                        .ok_or_else(|| refused("the ServiceEntry has no address".into()))?;
                    let address = tokio::net::lookup_host((host.as_str(), *port))
                        .await?
                        .next()
                        .ok_or_else(|| refused(format!("{host} has no address")))?;
                    NextHop::Passthrough(address)
                }
            };
            match target {
                NextHop::Passthrough(address) => {
                    let tcp = connect_from_pod(&from.sockets, address).await?;
                    Ok(Box::new(tcp) as BoxIo)
                }
                NextHop::Refuse(reason) => Err(refused(reason)),
                // `resolve` knows pods and Services only: neither comes from it.
                NextHop::Resolve { host, .. } => Err(refused(format!("{host} needs a lookup"))),
                NextHop::BlackHole(address) => Err(refused(format!("{address} is unknown"))),
                NextHop::Hbone {
                    identity: destination,
                    hbone_address,
                    target,
                } => {
                    let destination: Identity = destination.parse().map_err(|e| {
                        std::io::Error::other(format!("destination identity {destination}: {e}"))
                    })?;
                    let request = ConnectRequest {
                        source: identity,
                        destination,
                        hbone_address,
                        target,
                        source_ip: Some(from.pod_ip),
                        baggage: None,
                        trace: None,
                    };
                    let sockets = from.sockets.clone();
                    let stream = pool
                        .connect(request, move |address| {
                            let sockets = sockets.clone();
                            async move { connect_from_pod(&sockets, address).await }
                        })
                        .await
                        .map_err(|e| {
                            std::io::Error::other(format!("HBONE to {hbone_address}: {e}"))
                        })?;
                    Ok(Box::new(stream) as BoxIo)
                }
            }
        })
    }
}

/// Clients of the providers, by (provider, pod uid): each pod's checks go out as that pod.
pub type PodClients = weft_core::ext_authz::Clients<(String, String)>;

/// The agent's way to the providers of CUSTOM policies: its cache of clients, by
/// (provider, pod uid), and how a check reaches a provider (resolved in the registry like
/// any outbound connection, over HBONE from the pod with its identity).
pub struct Providers {
    clients: PodClients,
    registry: Registry,
    pool: HbonePool,
}

impl Providers {
    pub fn new(registry: Registry, pool: HbonePool) -> Self {
        Self {
            clients: PodClients::default(),
            registry,
            pool,
        }
    }

    /// The client of provider `name` for the pod `uid` (identity `identity`), or why the
    /// connections its policies cover are refused without asking.
    pub fn client(
        &self,
        snapshot: &Snapshot,
        name: &str,
        uid: &str,
        identity: &str,
        from: &CheckFrom,
    ) -> Result<Arc<Client>, String> {
        let settings = provider_settings(snapshot.mesh_config(), name)?;
        provider_service(snapshot, &settings)?;
        let identity: Identity = identity
            .parse()
            .map_err(|e| format!("the pod's identity {identity}: {e}"))?;
        self.clients
            .get((name.to_string(), uid.to_string()), &settings, || {
                Arc::new(PodConnector {
                    registry: self.registry.clone(),
                    pool: self.pool.clone(),
                    from: from.clone(),
                    identity,
                    settings: settings.clone(),
                })
            })
            .map_err(|e| e.to_string())
    }
}
