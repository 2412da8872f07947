//! The labels of Istio's standard metrics for the registry's workloads and services, filled
//! the way istiod and ztunnel fill them, so the agent and the waypoint label alike.
use std::net::SocketAddr;
use std::sync::Arc;

use weft_core::metrics::{
    ConnectionLabels, Reporter, SecurityPolicy, ServiceLabels, WorkloadLabels,
};

use crate::registry::Snapshot;
use crate::registry::model::{Service, Workload};

/// Istio's override of the derived workload name.
const WORKLOAD_NAME_LABEL: &str = "service.istio.io/workload-name";

/// The workload a pod belongs to, as Istio names it: its Deployment, CronJob, Job or
/// StatefulSet, else the pod itself. istiod reads the pod's controller from its owner
/// references; the registry keeps only labels, so the controller is recognised by the
/// labels each one stamps on its pods, which gives the same name for pods their
/// controllers made.
pub fn workload_name(workload: &Workload) -> &str {
    let labels = &workload.labels;
    let name = &*workload.name;
    if let Some(name) = labels.get(WORKLOAD_NAME_LABEL) {
        return name;
    }
    // Deployment → ReplicaSet `<deployment>-<hash>` → pod `<deployment>-<hash>-<suffix>`.
    if let Some(hash) = labels.get("pod-template-hash").filter(|h| !h.is_empty())
        && let Some(deployment) = name
            .rsplit_once('-')
            .and_then(|(replica_set, _)| replica_set.strip_suffix(hash.as_str()))
            .and_then(|prefix| prefix.strip_suffix('-'))
            .filter(|d| !d.is_empty())
    {
        return deployment;
    }
    // Job pods carry their job's name; a CronJob's jobs are `<cronjob>-<8 to 10 digits>`.
    if let Some(job) = labels
        .get("batch.kubernetes.io/job-name")
        .or_else(|| labels.get("job-name"))
    {
        return match job.rsplit_once('-') {
            Some((cron_job, stamp))
                if !cron_job.is_empty()
                    && (8..=10).contains(&stamp.len())
                    && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                cron_job
            }
            _ => job,
        };
    }
    // StatefulSet pods are `<statefulset>-<ordinal>`.
    if labels
        .get("statefulset.kubernetes.io/pod-name")
        .map(String::as_str)
        == Some(&*workload.name)
        && let Some((set, ordinal)) = name.rsplit_once('-')
        && !set.is_empty()
        && !ordinal.is_empty()
        && ordinal.bytes().all(|b| b.is_ascii_digit())
    {
        return set;
    }
    // DaemonSet pods are `<daemonset>-<5 random characters>`.
    if labels.contains_key("pod-template-generation")
        && labels.contains_key("controller-revision-hash")
        && let Some((set, suffix)) = name.rsplit_once('-')
        && !set.is_empty()
        && suffix.len() == 5
    {
        return set;
    }
    name
}

/// The `source_*`/`destination_*` labels of a workload, its principal (the identity its
/// certificate carries) included: callers that cannot vouch for it (a plaintext source)
/// clear it with [`WorkloadLabels::with_principal`].
pub fn workload_labels(workload: &Workload, cluster: &str) -> WorkloadLabels {
    WorkloadLabels::new(
        workload_name(workload),
        &workload.namespace,
        &workload.labels,
        cluster,
    )
    .with_principal(Some(&workload.identity))
}

pub fn service_labels(service: &Service) -> ServiceLabels {
    ServiceLabels::new(&service.hostname, &service.name, &service.namespace)
}

/// Istio's name for where `REGISTRY_ONLY` sends connections to unknown destinations: the
/// `destination_service` and `destination_service_name` of what it refuses.
pub const BLACK_HOLE_CLUSTER: &str = "BlackHoleCluster";

pub fn black_hole() -> ServiceLabels {
    ServiceLabels::new(BLACK_HOLE_CLUSTER, BLACK_HOLE_CLUSTER, "")
}

/// A ServiceEntry host as Istio labels it: `destination_service` and
/// `destination_service_name` are the host, the namespace the entry's.
pub fn entry_host_labels(host: &crate::registry::model::EntryHost) -> ServiceLabels {
    ServiceLabels::new(&host.host, &host.host, &host.namespace)
}

/// The Service a client addressed: the one whose ClusterIP and port it dialed.
pub fn addressed_service(snapshot: &Snapshot, destination: SocketAddr) -> Option<&Arc<Service>> {
    snapshot
        .service_by_vip(destination.ip())
        .filter(|service| service.port(destination.port()).is_some())
}

/// The Service a connection that arrived at `workload`'s `port` was most likely addressed
/// to, when nothing says (ztunnel's guess): a Service of the workload's namespace with that
/// workload among its endpoints and a port leading to `port`.
pub fn inbound_service<'a>(
    snapshot: &'a Snapshot,
    workload: &Workload,
    port: u16,
) -> Option<&'a Arc<Service>> {
    snapshot
        .services()
        .filter(|service| *service.namespace == *workload.namespace)
        .find(|service| {
            service.endpoints.iter().any(|endpoint| {
                workload.ips.contains(&endpoint.address)
                    && service
                        .ports
                        .iter()
                        .any(|p| service.endpoint_port(p.port, endpoint) == Some(port))
            })
        })
}

/// One connection's labels, from what the reporter knows of both ends.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    pub reporter: Reporter,
    /// The client's workload, when its address is a known pod's.
    pub source: Option<&'a Workload>,
    /// The identity the client proved with its certificate, if any: the only source
    /// principal reported (a plaintext source's pod is known, not proven).
    pub source_principal: Option<&'a str>,
    /// The server's workload.
    pub destination: Option<&'a Workload>,
    /// The Service the client addressed.
    pub service: Option<&'a Service>,
    pub security: SecurityPolicy,
    /// `source_cluster`/`destination_cluster` (Istio's cluster id, `Kubernetes` unless set).
    pub cluster: &'a str,
}

impl Connection<'_> {
    pub fn labels(&self) -> ConnectionLabels {
        let source = self.source.map_or_else(WorkloadLabels::unknown, |w| {
            workload_labels(w, self.cluster).with_principal(self.source_principal)
        });
        let source = match (self.source, self.source_principal) {
            // A proven identity from an address the registry does not know.
            (None, Some(principal)) => source.with_principal(Some(principal)),
            _ => source,
        };
        ConnectionLabels::new(self.reporter)
            .with_source(source)
            .with_destination(self.destination.map_or_else(WorkloadLabels::unknown, |w| {
                workload_labels(w, self.cluster)
            }))
            .with_destination_service(self.service.map(service_labels))
            .with_security_policy(self.security)
    }
}

#[cfg(test)]
mod tests {
    use weft_core::metrics::DEFAULT_CLUSTER_ID;

    use super::*;

    /// A pod of namespace `shop` named `name` with `labels`, as the registry holds it.
    fn workload(name: &str, labels: &[(&str, &str)]) -> Arc<Workload> {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{{}}}}}\nspec: {{containers: [{{name: app}}]}}\n",
            labels.join(", ")
        );
        let s = snapshot_of(&yaml);
        s.workload("shop", name).expect("the pod").clone()
    }

    /// A pod's name, its labels, and the workload name Istio gives it.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

    #[test]
    fn workload_names_are_the_controllers() {
        let cases: &[Case] = &[
            (
                "reviews-v2-5d8f9c7b4-x7k2p",
                &[("pod-template-hash", "5d8f9c7b4")],
                "reviews-v2",
            ),
            (
                "web-0",
                &[("statefulset.kubernetes.io/pod-name", "web-0")],
                "web",
            ),
            (
                "backup-28912345-abcde",
                &[("job-name", "backup-28912345")],
                "backup",
            ),
            (
                "migrate-x8k2p",
                &[("batch.kubernetes.io/job-name", "migrate")],
                "migrate",
            ),
            (
                "agent-7xk2p",
                &[
                    ("pod-template-generation", "1"),
                    ("controller-revision-hash", "6b7d"),
                ],
                "agent",
            ),
            ("client", &[("app", "client")], "client"),
            // A hash that is not in the name: a pod someone named by hand.
            ("web-abc-1", &[("pod-template-hash", "zzz")], "web-abc-1"),
            (
                "reviews-v2-5d8f9c7b4-x7k2p",
                &[
                    ("pod-template-hash", "5d8f9c7b4"),
                    ("service.istio.io/workload-name", "custom"),
                ],
                "custom",
            ),
        ];
        for (name, labels, expected) in cases {
            assert_eq!(workload_name(&workload(name, labels)), *expected, "{name}");
        }
    }

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, uid: u0, labels: {app: web, version: v1}}
spec: {nodeName: node-1, serviceAccountName: web, containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, uid: u1}
spec: {nodeName: node-2, serviceAccountName: client, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.2.11}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-0, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.11], conditions: {ready: true}, targetRef: {kind: Pod, namespace: shop, name: web-0}}]
ports: [{name: http, port: 8080, protocol: TCP}]
"#;

    fn snapshot() -> Arc<Snapshot> {
        snapshot_of(CLUSTER)
    }

    use crate::testing::snapshot_of;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn services_are_found_by_address_outbound_and_by_endpoint_inbound() {
        let s = snapshot();
        let web = s.workload("shop", "web-0").expect("web-0");
        assert_eq!(
            addressed_service(&s, addr("10.96.0.10:80")).map(|s| s.name.as_str()),
            Some("web")
        );
        assert!(addressed_service(&s, addr("10.96.0.10:81")).is_none());
        assert!(addressed_service(&s, addr("10.244.1.11:8080")).is_none());
        assert_eq!(
            inbound_service(&s, web, 8080).map(|s| s.name.as_str()),
            Some("web")
        );
        assert!(inbound_service(&s, web, 9000).is_none());
    }

    #[test]
    fn connection_labels_report_only_proven_source_principals() {
        let s = snapshot();
        let web = s.workload("shop", "web-0").expect("web-0");
        let client = s.workload("shop", "client").expect("client");
        let plaintext = Connection {
            reporter: Reporter::Destination,
            source: Some(client),
            source_principal: None,
            destination: Some(web),
            service: inbound_service(&s, web, 8080).map(|s| s.as_ref()),
            security: SecurityPolicy::None,
            cluster: DEFAULT_CLUSTER_ID,
        }
        .labels();
        assert_eq!(&*plaintext.source.workload, "client");
        assert_eq!(&*plaintext.source.principal, "unknown");
        assert_eq!(&*plaintext.source.canonical_service, "client");
        assert_eq!(&*plaintext.destination.workload, "web-0");
        assert_eq!(&*plaintext.destination.canonical_service, "web");
        assert_eq!(&*plaintext.destination.canonical_revision, "v1");
        assert_eq!(
            &*plaintext.destination.principal,
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(
            &*plaintext.destination_service.host,
            "web.shop.svc.cluster.local"
        );
        assert_eq!(&*plaintext.destination_service.name, "web");
        assert_eq!(&*plaintext.destination_service.namespace, "shop");

        let proven = Connection {
            source_principal: Some("spiffe://cluster.local/ns/shop/sa/client"),
            security: SecurityPolicy::MutualTls,
            ..Connection {
                reporter: Reporter::Destination,
                source: None,
                source_principal: None,
                destination: Some(web),
                service: None,
                security: SecurityPolicy::None,
                cluster: DEFAULT_CLUSTER_ID,
            }
        }
        .labels();
        assert_eq!(&*proven.source.workload, "unknown");
        assert_eq!(
            &*proven.source.principal,
            "spiffe://cluster.local/ns/shop/sa/client"
        );
        assert_eq!(&*proven.destination_service.host, "unknown");
    }
}
