//! The same-node fast path: a pod's connection whose next hop is the HBONE port of a pod
//! this agent process holds skips HBONE, TLS and HTTP/2. The agent knows both identities
//! (the client pod's, whose connection it accepted, and the destination pod's, which it
//! serves), so it runs the destination's side exactly as an HBONE CONNECT would
//! ([`hbone_inbound::admit_and_connect`]: the same admission, record, metrics and
//! access-log line) and splices the client's socket with the application's in user space.
//!
//! A waypoint is never skipped: a hop to a waypoint asks it for another address than its
//! own, and waypoints are not enrolled pods. Only pods of this process are in the table
//! ([`LocalPods`], kept by `capture::enrollment`): a successor after an upgrade fills its
//! own, and a retired agent empties its.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

use weft_core::identity::Identity;
use weft_ebpf_common::ports;

use super::connection::{AppStream, ProxiedConnection};
use super::error::Error;
use super::hbone_inbound::{self, Arrival, HboneInboundContext};
use super::records::SAME_NODE;
use super::resolve::NextHop;
use crate::capture::addresses::PodIps;

/// An enrolled pod as the fast path needs it.
#[derive(Clone)]
pub struct LocalPod<P> {
    pub uid: String,
    /// Its SPIFFE id (what its HBONE server would prove).
    pub identity: String,
    /// Its inbound side (for the agent, its HBONE server's context).
    pub inbound: P,
}

/// The pods this agent process holds, by each of their addresses.
pub struct LocalPods<P = HboneInboundContext> {
    enabled: bool,
    pods: RwLock<HashMap<IpAddr, LocalPod<P>>>,
}

impl<P: Clone> LocalPods<P> {
    /// `enabled`: the agent's `--same-node-fast-path`; off, the table stays empty and every
    /// hop goes over HBONE.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            pods: RwLock::default(),
        }
    }

    /// Files an enrolled pod under each of its addresses.
    pub fn insert(&self, ips: &[IpAddr], uid: &str, identity: &Identity, inbound: P) {
        if !self.enabled {
            return;
        }
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        for ip in ips {
            pods.insert(
                *ip,
                LocalPod {
                    uid: uid.to_string(),
                    identity: identity.to_string(),
                    inbound: inbound.clone(),
                },
            );
        }
    }

    /// Takes the pod `uid` out (it is unenrolled); another pod filed since under one of its
    /// addresses stays.
    pub fn remove(&self, uid: &str) {
        let mut pods = self.pods.write().unwrap_or_else(|e| e.into_inner());
        pods.retain(|_, pod| pod.uid != uid);
    }

    /// Empties the table: this agent no longer serves the node.
    pub fn clear(&self) {
        self.pods.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The pod `hop` leads straight into, and where in it, when it is one of this agent's
    /// and proves the identity the hop expects; `None` sends the connection over HBONE.
    pub fn destination(&self, hop: &NextHop) -> Option<(P, SocketAddr)> {
        let (ip, identity, target) = into_pod(hop)?;
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        let pod = pods.get(&ip)?;
        (pod.identity == identity).then(|| (pod.inbound.clone(), target))
    }
}

/// Whether `hop` leads straight into a pod: HBONE to the pod's own HBONE port asking for an
/// address of that same pod. A waypoint hop asks for the address the client dialed (a
/// Service's or another pod's), never the waypoint's own. Returns the pod's address, the
/// identity it must prove, and the target.
pub fn into_pod(hop: &NextHop) -> Option<(IpAddr, &str, SocketAddr)> {
    match hop {
        NextHop::Hbone {
            identity,
            hbone_address,
            target,
        } if hbone_address.port() == ports::HBONE && target.ip() == hbone_address.ip() => {
            Some((hbone_address.ip(), identity.as_str(), *target))
        }
        _ => None,
    }
}

/// Connects the outbound connection of the client pod (its addresses and identity) to the
/// destination pod `inbound` holds, at
/// `target`, through the destination's admission; the outbound record says where it went
/// and, once connected, the destination's `identity` (as the HBONE handshake would have
/// proven it). A refusal fails both records with the same reason.
pub async fn connect(
    (client_ips, client_identity): (&PodIps, &Identity),
    connection: &mut ProxiedConnection,
    (inbound, target): (HboneInboundContext, SocketAddr),
    identity: &str,
) -> Result<AppStream<tokio::net::TcpStream>, Error> {
    // The client pod's address of the destination's family, as its agent would dial the
    // tunnel from.
    let client = client_ips.facing(target.ip());
    let record = connection.record_mut();
    record.protocol = SAME_NODE;
    record.upstream = Some(target);
    let listener = record.listener;
    let peer = client_identity.to_string();
    // The destination's trace continues the client's, as the CONNECT would carry it.
    let trace = connection.trace_context();
    let incoming = move || trace;
    let snapshot = inbound.mesh.registry.load();
    let telemetry = crate::telemetry::inbound_proven(
        &inbound.mesh.telemetry,
        &snapshot,
        &inbound.uid,
        (&peer, client),
        target,
        incoming,
    );
    let arrival = Arrival {
        peer,
        client,
        connects_from: client,
        destination: target,
        // Where the agent received it: the client's outbound listener.
        listener,
        protocol: SAME_NODE,
    };
    let app = hbone_inbound::admit_and_connect(&inbound, snapshot, arrival, telemetry).await?;
    connection.record_mut().peer_identity = Some(identity.to_string());
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

    fn hbone(identity: &str, hbone_address: &str, target: &str) -> NextHop {
        NextHop::Hbone {
            identity: identity.into(),
            hbone_address: addr(hbone_address),
            target: addr(target),
        }
    }

    fn web() -> Identity {
        WEB.parse().expect("identity")
    }

    #[test]
    fn only_a_hop_straight_into_a_pod_s_hbone_port_is_a_candidate() {
        let direct = hbone(WEB, "10.244.1.11:15008", "10.244.1.11:8080");
        assert_eq!(
            into_pod(&direct),
            Some((
                "10.244.1.11".parse().expect("ip"),
                WEB,
                addr("10.244.1.11:8080")
            ))
        );
        // A waypoint is asked for the Service's address (or another pod's), never its own.
        let to_service = hbone(WEB, "10.244.1.20:15008", "10.96.0.10:80");
        let to_pod = hbone(WEB, "10.244.1.20:15008", "10.244.1.11:8080");
        assert_eq!(into_pod(&to_service), None);
        assert_eq!(into_pod(&to_pod), None);
        // A waypoint listening on another port than 15008.
        assert_eq!(
            into_pod(&hbone(WEB, "10.244.1.20:15009", "10.244.1.20:8080")),
            None
        );
        assert_eq!(
            into_pod(&NextHop::Passthrough(addr("10.244.1.11:8080"))),
            None
        );
    }

    #[test]
    fn a_pod_of_this_agent_proving_the_expected_identity_is_taken_on_the_fast_path() {
        let pods = LocalPods::new(true);
        let v4: IpAddr = "10.244.1.11".parse().expect("ip");
        let v6: IpAddr = "fd00:10:244:1::b".parse().expect("ip");
        pods.insert(&[v4, v6], "u-web", &web(), "web");
        let direct = hbone(WEB, "10.244.1.11:15008", "10.244.1.11:8080");
        assert_eq!(
            pods.destination(&direct),
            Some(("web", addr("10.244.1.11:8080")))
        );
        let direct6 = hbone(WEB, "[fd00:10:244:1::b]:15008", "[fd00:10:244:1::b]:8080");
        assert_eq!(
            pods.destination(&direct6),
            Some(("web", addr("[fd00:10:244:1::b]:8080")))
        );
        // Another node's pod, and a pod whose identity is not what the registry expects:
        // over HBONE, whose handshake decides.
        assert_eq!(
            pods.destination(&hbone(WEB, "10.244.2.11:15008", "10.244.2.11:8080")),
            None
        );
        let other = "spiffe://cluster.local/ns/shop/sa/other";
        assert_eq!(
            pods.destination(&hbone(other, "10.244.1.11:15008", "10.244.1.11:8080")),
            None
        );
        pods.remove("u-web");
        assert_eq!(pods.destination(&direct), None, "unenrolled");
        assert_eq!(pods.destination(&direct6), None, "unenrolled");
    }

    #[test]
    fn removing_a_pod_keeps_another_filed_since_at_its_address() {
        let pods = LocalPods::new(true);
        let ip: IpAddr = "10.244.1.11".parse().expect("ip");
        pods.insert(&[ip], "u-old", &web(), "old");
        pods.insert(&[ip], "u-new", &web(), "new");
        pods.remove("u-old");
        let direct = hbone(WEB, "10.244.1.11:15008", "10.244.1.11:8080");
        assert_eq!(pods.destination(&direct).map(|(p, _)| p), Some("new"));
        pods.clear();
        assert_eq!(
            pods.destination(&direct),
            None,
            "a retired agent holds none"
        );
    }

    #[test]
    fn switched_off_nothing_is_taken_on_the_fast_path() {
        let pods = LocalPods::new(false);
        pods.insert(
            &["10.244.1.11".parse().expect("ip")],
            "u-web",
            &web(),
            "web",
        );
        let direct = hbone(WEB, "10.244.1.11:15008", "10.244.1.11:8080");
        assert_eq!(pods.destination(&direct), None);
    }
}

#[cfg(test)]
mod access_log_tests {
    use std::sync::Arc;

    use weft_core::metrics::Metrics;
    use weft_core::telemetry::TraceContext;

    use super::*;
    use crate::proxy::connection::tests::access_lines;
    use crate::proxy::records::{ConnectionLog, ConnectionRecord, Direction, PodTraffic};
    use crate::telemetry::Telemetry;

    #[tokio::test]
    async fn a_same_node_connection_is_logged_as_such_and_counts_as_mutual_tls() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        // Only connections whose identities are proven are logged in `shop`.
        let cluster = format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders: [{{name: file, envoyFileAccessLog: {{path: {path}}}}}]
    defaultProviders: {{accessLogging: [file]}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mtls-only, namespace: shop}}
spec:
  accessLogging: [{{filter: {{expression: connection.mtls}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: shop, uid: u-web}}
spec: {{nodeName: node-1, serviceAccountName: web, containers: [{{name: app}}]}}
status: {{phase: Running, podIP: 10.244.1.11}}
"#,
            path = path.display()
        );
        let snapshot = weft_config::testing::snapshot_of(&cluster);
        let telemetry = Telemetry {
            metrics: Metrics::new(),
            tracer: Arc::new(weft_config::tracer::Tracer::new(
                "weft-agent",
                Vec::new(),
                None,
            )),
            cluster: "Kubernetes".into(),
            access_log: weft_core::access_log::AccessLog::new(Default::default()),
        };
        let client = "spiffe://cluster.local/ns/shop/sa/client";
        let mut record = ConnectionRecord::new(
            Direction::Inbound,
            "shop/web",
            addr("10.244.1.10:0"),
            addr("10.244.1.11:8080"),
            addr("10.244.1.10:15001"),
        );
        record.protocol = SAME_NODE;
        record.peer_identity = Some(client.into());
        let connection = crate::telemetry::inbound_proven(
            &telemetry,
            &snapshot,
            "u-web",
            (client, "10.244.1.10".parse().expect("ip")),
            addr("10.244.1.11:8080"),
            || TraceContext::new_root(None),
        );
        drop(ProxiedConnection::new(
            record,
            connection,
            ConnectionLog::new(8),
            Arc::new(PodTraffic::default()),
            None,
        ));
        let lines = access_lines(&path, 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&format!("src.identity=\"{client}\""))
                && lines[0].contains("direction=\"inbound\" protocol=\"SAME_NODE\""),
            "{}",
            lines[0]
        );
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }
}
