//! What the waypoint's in-process tests share: a waypoint context over a YAML cluster, and
//! the stream a client's CONNECT to a ServiceEntry host arrives as.
use std::net::SocketAddr;
use std::sync::Arc;

use weft_core::ca::{CaConfig, CertificateAuthority};
use weft_core::hbone::{HbonePool, PoolConfig};
use weft_core::identity::{IdentityManager, LiveTrust, ManagerConfig};
use weft_core::metrics::Metrics;
use weft_waypoint::context::WaypointContext;
use weft_waypoint::downstream::{Downstream, Target};
use weft_waypoint::route::Source;

/// The waypoint `egress/waypoint` serving the cluster `yaml`, with a mesh CA of its own.
#[allow(dead_code)] // the tests with a waypoint of their own namespace use `context_of`
pub fn context(yaml: &str) -> Arc<WaypointContext> {
    context_of(yaml, "waypoint", "egress")
}

/// The waypoint `namespace/name` (its Gateway's) on the registry of `yaml`.
#[allow(dead_code)] // not every test file has a waypoint of its own namespace
pub fn context_of(yaml: &str, name: &str, namespace: &str) -> Arc<WaypointContext> {
    let registry = weft_config::testing::registry_of(yaml);
    let ca = CertificateAuthority::generate(CaConfig::default()).expect("mesh CA");
    let trust = LiveTrust::new(ca.trust_bundle());
    let manager = IdentityManager::new(Arc::new(ca), ManagerConfig::default());
    let pool = HbonePool::new(manager, trust, PoolConfig::default());
    let identity = format!("spiffe://cluster.local/ns/{namespace}/sa/{name}")
        .parse()
        .expect("identity");
    Arc::new(WaypointContext::new(
        name.into(),
        namespace.into(),
        identity,
        registry,
        pool,
        Metrics::new(),
        Arc::new(weft_config::tracer::Tracer::new(
            format!("{name}.{namespace}"),
            Vec::new(),
            None,
        )),
    ))
}

/// What a CONNECT stream from `shop/app` to the ServiceEntry host `host` (at its first
/// address) on `port` arrives as.
pub fn entry_downstream(ctx: &WaypointContext, host: &str, port: u16) -> Downstream {
    let snapshot = ctx.registry.load();
    let host = snapshot
        .entry_host_named(host, "shop")
        .expect("the entry host")
        .clone();
    let destination = SocketAddr::new(host.vips[0], port);
    Downstream {
        target: Target::EntryHost { host, port },
        source: Source {
            namespace: Some("shop".into()),
            labels: Default::default(),
            principal: Some("spiffe://cluster.local/ns/shop/sa/app".into()),
        },
        source_ip: None,
        destination,
        secure: false,
        tunnel_trace: None,
    }
}
