//! Reaching the external authorization services CUSTOM policies name: the provider's
//! Service through the waypoint's own connection layer (over HBONE to a mesh endpoint,
//! proving the waypoint's identity, or plain TCP to one outside the mesh, as any upstream),
//! a ServiceEntry's addresses in plain TCP. The service is looked up again for every
//! connection, so endpoints that come and go are followed.
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use weft_config::authz::ext_authz::{ProviderService, provider_service, provider_settings};
use weft_config::registry::Registry;
use weft_core::ext_authz::{BoxIo, Client, Connect, Connecting, Settings};

use crate::context::WaypointContext;
use crate::forward::connections::Connections;
use crate::forward::endpoints::candidates;

/// How long connecting to the provider may take (the check's own timeout still bounds it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct ProviderConnector {
    registry: Registry,
    connections: Connections,
    settings: Settings,
}

impl Connect for ProviderConnector {
    fn connect(&self) -> Connecting {
        let snapshot = self.registry.snapshot();
        let settings = self.settings.clone();
        let connections = self.connections.clone();
        Box::pin(async move {
            let refused =
                |reason: String| std::io::Error::new(std::io::ErrorKind::NotFound, reason);
            match provider_service(&snapshot, &settings).map_err(refused)? {
                ProviderService::Service(service) => {
                    let found = candidates(
                        &snapshot,
                        &service.hostname,
                        None,
                        settings.port,
                        crate::forward::endpoints::Reach::Endpoints,
                    )
                    .map_err(|e| refused(e.to_string()))?;
                    let chosen = &found[fastrand::usize(..found.len())];
                    let io = connections
                        .open_stream(
                            chosen.address,
                            &chosen.transport,
                            crate::forward::connections::ConnectionLimits {
                                connect_timeout: Some(CONNECT_TIMEOUT),
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok(Box::new(io) as BoxIo)
                }
                ProviderService::External(targets) => {
                    let Some((host, port)) = targets.get(fastrand::usize(..targets.len().max(1)))
                    else {
                        return Err(refused(format!(
                            "extension provider {}: no address",
                            settings.name
                        )));
                    };
                    let tcp = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        TcpStream::connect((host.as_str(), *port)),
                    )
                    .await
                    .map_err(|_| std::io::Error::other("connect timed out"))??;
                    let _ = tcp.set_nodelay(true);
                    Ok(Box::new(tcp) as BoxIo)
                }
            }
        })
    }
}

/// The client of provider `name`, or why the requests its policies cover are denied
/// without asking (Istio's "bad CUSTOM action": an undefined provider, one that is not an
/// ext-authz provider, or whose service is not in the registry).
pub fn client(
    ctx: &WaypointContext,
    snapshot: &weft_config::registry::Snapshot,
    name: &str,
) -> Result<Arc<Client>, String> {
    let settings = provider_settings(snapshot.mesh_config(), name)?;
    provider_service(snapshot, &settings)?;
    ctx.ext_authz
        .get(name.to_string(), &settings, || {
            Arc::new(ProviderConnector {
                registry: ctx.registry.clone(),
                connections: ctx.connections.clone(),
                settings: settings.clone(),
            })
        })
        .map_err(|e| e.to_string())
}
