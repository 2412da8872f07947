//! Which waypoint(s) traffic arriving at a pod must have come through, answered with one
//! probe per inbound connection.
//!
//! A pod backs a Service when one of the Service's endpoints names it (`targetRef`). If
//! that Service is bound to a waypoint, the pod's agent must admit only what a waypoint
//! delivers, or a client could dial the pod IP and skip the L7 rules. Finding those
//! Services by scanning every Service of the cluster on each connection costs thousands
//! of comparisons on a large cluster, so the registry keeps an index, pod → bindings of
//! the Services it backs, brought up to date only for the Services a batch touches.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::{Service, Waypoint, Workload};
use super::name_key::{NameKey, NamePair};
use super::snapshot::Snapshot;

impl Snapshot {
    /// The waypoints that may deliver traffic to `workload`; empty when it is behind none.
    ///
    /// The pod's own `istio.io/use-waypoint` binding, when it names a waypoint that serves
    /// workloads (traffic to the pod's address goes there), first; then the waypoints (that
    /// serve services) of the Services of its namespace that it backs (traffic to each
    /// Service's address goes to that Service's waypoint, as `resolve` sends it). Each of
    /// them delivers legitimately, so callers accept any; anything else skipped the L7
    /// rules. After the pod's own, the list is sorted by (namespace, name) and without
    /// repeats, so it does not depend on hash order.
    pub fn required_waypoints(&self, workload: &Workload) -> Vec<&Arc<Waypoint>> {
        let own = self.workload_waypoint(workload);
        let key: &dyn NamePair = &(&*workload.namespace, &*workload.name);
        // Bindings are resolved here rather than when indexed: a waypoint's Gateway may
        // come, go or change what it serves without the Services changing.
        let mut backed: Vec<&Arc<Waypoint>> = self
            .backed_waypoints
            .get(key)
            .into_iter()
            .flat_map(|bindings| bindings.values())
            .filter_map(|binding| self.waypoint(binding))
            .filter(|w| w.traffic.serves_services())
            .filter(|w| own.is_none_or(|o| o.namespace != w.namespace || o.name != w.name))
            .collect();
        backed.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        backed.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
        own.into_iter().chain(backed).collect()
    }
}

/// The pods `service` backs, for the index: only a waypoint-bound Service counts (the
/// index stays as small as the set of bound Services), and only endpoints whose
/// `targetRef` is in the Service's own namespace, since a Service selects pods of its own
/// namespace.
fn backed_pods(service: &Service) -> impl Iterator<Item = &str> {
    let bound = service.waypoint.is_some();
    service
        .endpoints
        .iter()
        .filter(move |_| bound)
        .filter_map(|e| e.target.as_ref())
        .filter(|(namespace, _)| **namespace == *service.namespace)
        .map(|(_, name)| &**name)
}

/// Records what `service` (as just derived) contributes to the index.
pub(super) fn index_service(service: &Service, snapshot: &mut Snapshot) {
    let Some(binding) = &service.waypoint else {
        return;
    };
    for pod in backed_pods(service) {
        let key = NameKey::new(service.namespace.as_str().into(), pod.into());
        match snapshot.backed_waypoints.get_mut(&key) {
            Some(bindings) => {
                Arc::make_mut(bindings).insert(service.name.clone(), binding.clone());
            }
            None => {
                let bindings = BTreeMap::from([(service.name.clone(), binding.clone())]);
                snapshot.backed_waypoints.insert(key, Arc::new(bindings));
            }
        }
    }
}

/// Withdraws what the previous version of `service` contributed; pods left with no bound
/// Service leave the index.
pub(super) fn unindex_service(service: &Service, snapshot: &mut Snapshot) {
    for pod in backed_pods(service) {
        let key: &dyn NamePair = &(service.namespace.as_str(), pod);
        let mut now_empty = false;
        if let Some(bindings) = snapshot.backed_waypoints.get_mut(key) {
            Arc::make_mut(bindings).remove(&service.name);
            now_empty = bindings.is_empty();
        }
        if now_empty {
            snapshot.backed_waypoints.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::api::{Kind, ObjectRef};
    use crate::registry::{Change, Registry};
    use crate::source::yaml;

    /// Namespace `shop` with pod `reviews-0`, two waypoints that serve services (`wp-a`,
    /// `wp-b`) and one that serves workloads (`wp-own`).
    const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-a, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-b, namespace: shop, labels: {istio.io/waypoint-for: service}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-own, namespace: shop, labels: {istio.io/waypoint-for: workload}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-0, namespace: shop, uid: r0, labels: {app: reviews}}
spec: {nodeName: node-1, serviceAccountName: reviews, containers: [{name: app}]}
status: {phase: Running, podIP: 10.244.1.11}
"#;

    /// Service `namespace/name` (bound to `waypoint` unless it is empty) with a slice whose
    /// endpoints name `pods` of `target_namespace`.
    fn service(
        namespace: &str,
        name: &str,
        waypoint: &str,
        target_namespace: &str,
        pods: &[&str],
    ) -> String {
        let labels = if waypoint.is_empty() {
            String::from("{}")
        } else {
            format!("{{istio.io/use-waypoint: {waypoint}}}")
        };
        let endpoints: Vec<String> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                format!(
                    "{{addresses: [10.244.9.{}], targetRef: {{kind: Pod, namespace: {target_namespace}, name: {pod}}}}}",
                    i + 1
                )
            })
            .collect();
        format!(
            r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}, labels: {labels}}}
spec: {{ports: [{{name: http, port: 9080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{}]
ports: [{{name: http, port: 9080, protocol: TCP}}]
"#,
            endpoints.join(", ")
        )
    }

    fn apply(registry: &Registry, text: &str) {
        let documents =
            yaml::parse(text, Arc::new(PathBuf::from("t.yaml"))).expect("test YAML parses");
        assert!(documents.errors.is_empty(), "{:?}", documents.errors);
        let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
        assert!(report.refused.is_empty(), "{:?}", report.refused);
    }

    fn registry(text: &str) -> Registry {
        let registry = Registry::default();
        apply(&registry, text);
        registry
    }

    /// The names of the waypoints `shop/reviews-0` requires.
    fn required(registry: &Registry) -> Vec<String> {
        let snapshot = registry.snapshot();
        let reviews = snapshot.workload("shop", "reviews-0").expect("reviews pod");
        let found: Vec<String> = snapshot
            .required_waypoints(reviews)
            .iter()
            .map(|w| w.name.clone())
            .collect();
        assert_eq!(
            found.first(),
            scan(&snapshot, reviews).map(|w| &w.name),
            "agrees with the full scan it replaces"
        );
        found
    }

    /// The scan the index replaces (the agent's former per-connection search), for
    /// comparison: the first match in (namespace, name) order.
    fn scan<'s>(snapshot: &'s Snapshot, workload: &Workload) -> Option<&'s Arc<Waypoint>> {
        if let Some(own) = snapshot.workload_waypoint(workload) {
            return Some(own);
        }
        let mut matching: Vec<&Arc<Waypoint>> = snapshot
            .services()
            .filter(|s| *s.namespace == *workload.namespace)
            .filter(|s| {
                s.endpoints.iter().any(|e| {
                    e.target.as_ref().is_some_and(|(ns, name)| {
                        **ns == *workload.namespace && **name == *workload.name
                    })
                })
            })
            .filter_map(|s| snapshot.service_waypoint(s))
            .collect();
        matching.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        matching.first().copied()
    }

    #[test]
    fn a_pod_that_backs_a_bound_service_requires_its_waypoint() {
        let r = registry(&format!(
            "{BASE}{}",
            service("shop", "reviews", "wp-a", "shop", &["reviews-0"])
        ));
        assert_eq!(required(&r), ["wp-a"]);
    }

    #[test]
    fn the_pods_own_binding_comes_first_and_its_services_waypoints_still_deliver() {
        let own = BASE.replace(
            "labels: {app: reviews}",
            "labels: {app: reviews, istio.io/use-waypoint: wp-own}",
        );
        assert_eq!(required(&registry(&own)), ["wp-own"]);
        // Traffic to the pod's address goes through wp-own, to the Service's through wp-a
        // (where the agents send it): both may deliver.
        let r = registry(&format!(
            "{own}{}",
            service("shop", "reviews", "wp-a", "shop", &["reviews-0"])
        ));
        assert_eq!(required(&r), ["wp-own", "wp-a"]);
    }

    #[test]
    fn a_service_of_another_namespace_or_without_a_waypoint_does_not_count() {
        let r = registry(&format!(
            "{BASE}{}{}",
            // Its endpoint names shop/reviews-0, but a Service selects its own namespace.
            service("other", "reviews", "wp-a", "shop", &["reviews-0"]),
            service("shop", "plain", "", "shop", &["reviews-0"]),
        ));
        assert_eq!(required(&r), Vec::<String>::new());
        let snapshot = r.snapshot();
        assert_eq!(
            snapshot.backed_waypoints.len(),
            0,
            "neither service enters the index"
        );
    }

    #[test]
    fn a_binding_to_a_missing_or_workload_only_waypoint_does_not_count() {
        let r = registry(&format!(
            "{BASE}{}{}",
            service("shop", "ghost", "wp-missing", "shop", &["reviews-0"]),
            service("shop", "wrong", "wp-own", "shop", &["reviews-0"]),
        ));
        assert_eq!(required(&r), Vec::<String>::new());
        // The Gateway appearing later binds the service without the service changing.
        apply(
            &r,
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp-missing, namespace: shop, labels: {istio.io/waypoint-for: all}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
"#,
        );
        assert_eq!(required(&r), ["wp-missing"]);
    }

    #[test]
    fn services_on_different_waypoints_each_count_once_in_name_order() {
        let r = registry(&format!(
            "{BASE}{}{}{}",
            service("shop", "reviews-v2", "wp-b", "shop", &["reviews-0"]),
            service(
                "shop",
                "reviews",
                "wp-a",
                "shop",
                &["reviews-0", "reviews-0"]
            ),
            service("shop", "reviews-v3", "wp-b", "shop", &["reviews-0"]),
        ));
        assert_eq!(required(&r), ["wp-a", "wp-b"]);
    }

    #[test]
    fn the_index_follows_changes_to_endpoints_labels_and_namespaces() {
        let bound = service("shop", "reviews", "wp-a", "shop", &["reviews-0"]);
        let r = registry(&format!("{BASE}{bound}"));
        assert_eq!(required(&r), ["wp-a"]);
        let before = r.snapshot();

        // The pod's endpoint leaves the slice.
        apply(
            &r,
            &service("shop", "reviews", "wp-a", "shop", &["reviews-1"]),
        );
        assert_eq!(required(&r), Vec::<String>::new());

        // Back, then the slice is deleted.
        apply(&r, &bound);
        assert_eq!(required(&r), ["wp-a"]);
        r.apply([Change::Delete(ObjectRef::new(
            Kind::EndpointSlice,
            "shop",
            "reviews-1",
        ))]);
        assert_eq!(required(&r), Vec::<String>::new());

        // Back, then the service loses its label.
        apply(&r, &bound);
        assert_eq!(required(&r), ["wp-a"]);
        apply(&r, &service("shop", "reviews", "", "shop", &["reviews-0"]));
        assert_eq!(required(&r), Vec::<String>::new());

        // Bound through its namespace's label instead, then the namespace drops it.
        let namespace = |labels: &str| {
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {labels}}}\n")
        };
        apply(
            &r,
            &namespace("{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp-b}"),
        );
        assert_eq!(required(&r), ["wp-b"]);
        apply(&r, &namespace("{istio.io/dataplane-mode: ambient}"));
        assert_eq!(required(&r), Vec::<String>::new());

        // The service goes away entirely.
        apply(&r, &bound);
        assert_eq!(required(&r), ["wp-a"]);
        r.apply([Change::Delete(ObjectRef::new(
            Kind::Service,
            "shop",
            "reviews",
        ))]);
        assert_eq!(required(&r), Vec::<String>::new());
        assert_eq!(
            r.snapshot().backed_waypoints.len(),
            0,
            "nothing left behind"
        );

        // A snapshot taken earlier keeps its own answer: the index is copied on write.
        let reviews = before.workload("shop", "reviews-0").expect("reviews pod");
        let names: Vec<&str> = before
            .required_waypoints(reviews)
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        assert_eq!(names, ["wp-a"]);
    }
}
