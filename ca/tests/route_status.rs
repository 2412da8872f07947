//! The route status writer against the fixture API server (`config/tests/fixture`), over
//! the real HTTP exchange: the CA's registry watches what resolving routes needs, and the
//! writer patches each route's `status` subresource under the ClusterRole `weft-ca` of
//! deploy/base/rbac.yaml (so it is shown to need no more). Objects change as users change
//! them: through the API, as an admin.
#[path = "../../config/tests/fixture/mod.rs"]
mod fixture;

use std::path::Path;
use std::time::{Duration, Instant};

use fixture::ApiServer;
use serde::Deserialize as _;
use serde_json::{Value, json};
use weft_config::registry::Registry;
use weft_config::source::{self, KubeSource, KubeSourceConfig, SourceTask};

const TOKEN: &str = "weft-ca-token";
const CONTROLLER: &str = "weft.io/gateway-controller";

fn rbac(kind: &str, name: &str) -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/rbac.yaml"),
    )
    .expect("deploy/base/rbac.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML"))
        .map(|d| serde_json::to_value(d).expect("JSON"))
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} in deploy/base/rbac.yaml"))
}

fn service(namespace: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"clusterIP": ip, "selector": {"app": name},
                    "ports": [{"name": "http", "port": 9080}]}})
}

/// The cluster, and the CA's registry and route status writer running as weft-ca.
struct Cluster {
    api: ApiServer,
    _source: SourceTask,
    writer: tokio::task::JoinHandle<()>,
    registry: Registry,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl Cluster {
    async fn start() -> Self {
        let api = ApiServer::start().await;
        for (name, labels) in [
            ("shop", json!({"istio.io/dataplane-mode": "ambient"})),
            ("other", json!({})),
        ] {
            api.apply(json!({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": name, "labels": labels}}));
        }
        api.apply(service(
            "shop",
            "reviews",
            "10.96.0.10",
            json!({"istio.io/use-waypoint": "waypoint"}),
        ));
        api.apply(service("shop", "reviews-v1", "10.96.0.11", json!({})));
        api.apply(service("other", "ratings", "10.96.0.12", json!({})));
        api.apply(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "shop", "labels": {"istio.io/waypoint-for": "service"}},
            "spec": {"gatewayClassName": "istio-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
        }));
        api.add_user(
            TOKEN,
            "system:serviceaccount:weft-system:weft-ca",
            &rbac("ClusterRole", "weft-ca"),
        );
        let registry = Registry::default();
        let mut kinds: std::collections::BTreeSet<_> = source::CA_WATCHED.into();
        kinds.extend(weft_ca::route_status::WATCHED);
        let client = api.client_with_token(TOKEN);
        let task = source::spawn(
            &registry,
            KubeSource::new(client.clone()).with_config(KubeSourceConfig {
                kinds,
                resync: None,
                discovery_retry: Duration::from_millis(200),
                ..Default::default()
            }),
        );
        tokio::time::timeout(Duration::from_secs(15), task.ready())
            .await
            .expect("the source became ready")
            .expect("the source did not end");
        let writer = tokio::spawn(weft_ca::route_status::run(
            client,
            registry.clone(),
            weft_ca::route_status::RouteStatusConfig {
                retry: Duration::from_millis(200),
            },
        ));
        Self {
            api,
            _source: task,
            writer,
            registry,
        }
    }

    /// weft's condition `type_` for the parent `parent` (by name) of the route.
    fn condition(
        &self,
        api_version: &str,
        kind: &str,
        route: &str,
        parent: &str,
        type_: &str,
    ) -> Option<(String, String, String)> {
        let route = self.api.get(api_version, kind, "shop", route)?;
        let entry = route["status"]["parents"]
            .as_array()?
            .iter()
            .find(|p| p["controllerName"] == CONTROLLER && p["parentRef"]["name"] == parent)?
            .clone();
        let condition = entry["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        Some((
            condition["status"].as_str()?.to_string(),
            condition["reason"].as_str()?.to_string(),
            condition["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    async fn wait(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; requests: {:#?}",
                self.api.requests()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

const HTTP: &str = "gateway.networking.k8s.io/v1";

fn http_route() -> Value {
    json!({
        "apiVersion": HTTP, "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "reviews", "port": 9080},
                {"name": "waypoint"},
                {"name": "someone-elses"},
            ],
            "rules": [{"backendRefs": [
                {"name": "reviews-v1", "port": 9080, "weight": 90},
                {"name": "ratings", "namespace": "other", "port": 9080, "weight": 10},
            ]}],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_report_their_parents_and_references_and_follow_reference_grants() {
    let cluster = Cluster::start().await;
    cluster.api.apply(http_route());
    let refs = |c: &Cluster| c.condition(HTTP, "HTTPRoute", "reviews", "reviews", "ResolvedRefs");
    cluster
        .wait("ResolvedRefs False: no ReferenceGrant in `other`", |c| {
            refs(c)
                .is_some_and(|(status, reason, _)| status == "False" && reason == "RefNotPermitted")
        })
        .await;
    let (_, _, message) = refs(&cluster).expect("ResolvedRefs");
    assert!(
        message.contains("spec.rules[0].backendRefs[1]") && message.contains("ReferenceGrant"),
        "{message}"
    );
    assert_eq!(
        cluster
            .condition(HTTP, "HTTPRoute", "reviews", "reviews", "Accepted")
            .map(|(s, r, _)| (s, r)),
        Some(("True".into(), "Accepted".into()))
    );
    assert_eq!(
        cluster
            .condition(HTTP, "HTTPRoute", "reviews", "reviews", "ResolvedWaypoints")
            .map(|(s, _, _)| s),
        Some("True".into())
    );
    // The waypoint's own Gateway takes no routes: refused, with the way out.
    let (status, reason, message) = cluster
        .condition(HTTP, "HTTPRoute", "reviews", "waypoint", "Accepted")
        .expect("the waypoint parent's Accepted");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NotAllowedByListeners")
    );
    assert!(message.contains("kind: Service"), "{message}");
    // A Gateway weft does not know is not weft's to report on.
    let route = cluster
        .api
        .get(HTTP, "HTTPRoute", "shop", "reviews")
        .expect("route");
    assert_eq!(
        route["status"]["parents"].as_array().map(Vec::len),
        Some(2),
        "{route}"
    );

    cluster.api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "shop-routes", "namespace": "other"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
                 "to": [{"group": "", "kind": "Service"}]},
    }));
    cluster
        .wait("ResolvedRefs True once the grant exists", |c| {
            refs(c).is_some_and(|(status, _, _)| status == "True")
        })
        .await;
    // Written only when it changes: neither the writer's own write nor a change elsewhere
    // in the cluster (a new Service, so a new registry version) makes it write again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let patches = cluster.api.count_requests("MERGE status httproutes");
    assert!(
        patches >= 2,
        "the status was written: {:#?}",
        cluster.api.requests()
    );
    cluster
        .api
        .apply(service("other", "unrelated", "10.96.0.13", json!({})));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        cluster.api.count_requests("MERGE status httproutes"),
        patches
    );

    cluster.api.delete("ReferenceGrant", "other", "shop-routes");
    cluster
        .wait("ResolvedRefs False again without the grant", |c| {
            refs(c).is_some_and(|(status, _, _)| status == "False")
        })
        .await;
}

/// Istio's Bookinfo ingress with the Gateway API: the HTTPRoute attached to a Gateway of
/// class `istio` is `Accepted` there (weft's ingress gateway serves it); one from another
/// namespace is not allowed by the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_attached_to_an_ingress_gateway_is_accepted_where_its_listener_allows_it() {
    let cluster = Cluster::start().await;
    cluster.api.apply(json!({
        "apiVersion": HTTP, "kind": "Gateway",
        "metadata": {"name": "bookinfo-gateway", "namespace": "shop"},
        "spec": {"gatewayClassName": "istio",
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP",
                                "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
    }));
    let route = |namespace: &str| {
        json!({
            "apiVersion": HTTP, "kind": "HTTPRoute",
            "metadata": {"name": "bookinfo", "namespace": namespace},
            "spec": {
                "parentRefs": [{"name": "bookinfo-gateway", "namespace": "shop"}],
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/productpage"}}],
                           "backendRefs": [{"name": "reviews", "namespace": "shop", "port": 9080}]}],
            },
        })
    };
    cluster.api.apply(route("shop"));
    cluster
        .wait("the route Accepted by the ingress Gateway", |c| {
            c.condition(
                HTTP,
                "HTTPRoute",
                "bookinfo",
                "bookinfo-gateway",
                "Accepted",
            )
            .is_some_and(|(status, reason, _)| status == "True" && reason == "Accepted")
        })
        .await;
    let entry = cluster
        .api
        .get(HTTP, "HTTPRoute", "shop", "bookinfo")
        .expect("route");
    let conditions: Vec<&str> = entry["status"]["parents"][0]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(conditions, ["Accepted", "ResolvedRefs"], "{entry}");
    cluster.api.apply(route("other"));
    cluster
        .wait("the other namespace's route not allowed", |c| {
            c.api
                .get(HTTP, "HTTPRoute", "other", "bookinfo")
                .and_then(|r| {
                    r["status"]["parents"][0]["conditions"][0]["reason"]
                        .as_str()
                        .map(str::to_string)
                })
                .is_some_and(|reason| reason == "NotAllowedByListeners")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_controllers_entries_stay_and_grpc_routes_are_reported_too() {
    let cluster = Cluster::start().await;
    cluster.api.apply(json!({
        "apiVersion": HTTP, "kind": "GRPCRoute",
        "metadata": {"name": "greeter", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "missing"},
                                {"group": "", "kind": "Service", "name": "reviews-v1"}],
                 "rules": [{"backendRefs": [{"name": "reviews-v1", "port": 9080}]}]},
    }));
    cluster
        .wait("the GRPCRoute's status", |c| {
            c.condition(HTTP, "GRPCRoute", "greeter", "missing", "Accepted")
                .is_some()
        })
        .await;
    assert_eq!(
        cluster
            .condition(HTTP, "GRPCRoute", "greeter", "missing", "Accepted")
            .map(|(s, r, _)| (s, r)),
        Some(("False".into(), "NoMatchingParent".into()))
    );
    // reviews-v1 names no waypoint: accepted, but no proxy applies it.
    assert_eq!(
        cluster
            .condition(
                HTTP,
                "GRPCRoute",
                "greeter",
                "reviews-v1",
                "ResolvedWaypoints"
            )
            .map(|(s, r, _)| (s, r)),
        Some(("False".into(), "MissingUseWaypointLabel".into()))
    );

    // Another controller writes its own entry; weft's next write keeps it.
    let mut route = cluster
        .api
        .get(HTTP, "GRPCRoute", "shop", "greeter")
        .expect("route");
    let mut parents = route["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    parents.insert(
        0,
        json!({"parentRef": {"name": "edge"}, "controllerName": "example.com/gateway",
               "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                               "message": "theirs", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    );
    route["status"]["parents"] = Value::Array(parents);
    cluster.api.apply(route.clone());
    let route_v2 = {
        let mut r = route;
        r["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("gone");
        r
    };
    cluster.api.apply(route_v2);
    cluster
        .wait("BackendNotFound after the backend changed", |c| {
            c.condition(HTTP, "GRPCRoute", "greeter", "reviews-v1", "ResolvedRefs")
                .is_some_and(|(_, reason, _)| reason == "BackendNotFound")
        })
        .await;
    let route = cluster
        .api
        .get(HTTP, "GRPCRoute", "shop", "greeter")
        .expect("route");
    assert_eq!(
        route["status"]["parents"][0]["controllerName"], "example.com/gateway",
        "{route}"
    );
}

/// TLSRoutes and TCPRoutes attached to an ingress Gateway's TLS and TCP listeners are
/// reported as HTTPRoutes are (a TCPRoute named to the TLS Passthrough listener is not
/// allowed there), and weft-ca's controller, given the same resolution, counts each
/// listener's attached routes in the Gateway's status, and counts again when a route goes.
/// A newer route whose connections all go to an older one is Accepted, says which route
/// takes them, and is not counted, until the older one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_tcp_routes_are_reported_and_counted_on_their_listeners() {
    let cluster = Cluster::start().await;
    let config = weft_ca::controller::ControllerConfig {
        discovery_retry: Duration::from_millis(200),
        routes: Some(weft_ca::controller::AttachedRoutes(
            cluster.registry.clone(),
        )),
        ..weft_ca::controller::ControllerConfig::default()
    };
    let client = cluster.api.client_with_token(TOKEN);
    let controller = tokio::spawn(async move {
        if let Err(e) = weft_ca::controller::run(client, config).await {
            panic!("the controller stopped: {e}");
        }
    });
    cluster.api.apply(json!({
        "apiVersion": HTTP, "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "shop"},
        "spec": {"gatewayClassName": "istio",
                 "listeners": [
                     {"name": "tls", "port": 443, "protocol": "TLS", "tls": {"mode": "Passthrough"}},
                     {"name": "tcp", "port": 9000, "protocol": "TCP"},
                 ]},
    }));
    cluster.api.apply(json!({
        "apiVersion": HTTP, "kind": "TLSRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["web.example.com"],
                 "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]},
    }));
    let tcp = "gateway.networking.k8s.io/v1alpha2";
    let tcp_route = |name: &str, section: &str| {
        json!({
            "apiVersion": tcp, "kind": "TCPRoute",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "edge", "sectionName": section}],
                     "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]},
        })
    };
    cluster.api.apply(tcp_route("db", "tcp"));
    cluster.api.apply(tcp_route("misplaced", "tls"));
    let accepted = |c: &Cluster, api_version: &str, kind: &str, route: &str| {
        c.condition(api_version, kind, route, "edge", "Accepted")
            .map(|(status, reason, _)| (status, reason))
    };
    let yes = Some(("True".to_string(), "Accepted".to_string()));
    cluster
        .wait("the TLSRoute and the TCPRoute Accepted", |c| {
            accepted(c, HTTP, "TLSRoute", "web") == yes && accepted(c, tcp, "TCPRoute", "db") == yes
        })
        .await;
    cluster
        .wait("the TCPRoute named to the TLS listener not allowed", |c| {
            accepted(c, tcp, "TCPRoute", "misplaced")
                == Some(("False".to_string(), "NotAllowedByListeners".to_string()))
        })
        .await;
    let attached = |c: &Cluster| -> Vec<(String, i64, Vec<String>)> {
        c.api
            .get(HTTP, "Gateway", "shop", "edge")
            .and_then(|g| g["status"]["listeners"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|l| {
                (
                    l["name"].as_str().unwrap_or_default().to_string(),
                    l["attachedRoutes"].as_i64().unwrap_or(-1),
                    l["supportedKinds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k["kind"].as_str().map(str::to_string))
                        .collect(),
                )
            })
            .collect()
    };
    let listeners = |tls: i64, tcp: i64| {
        vec![
            ("tls".to_string(), tls, vec!["TLSRoute".to_string()]),
            ("tcp".to_string(), tcp, vec!["TCPRoute".to_string()]),
        ]
    };
    cluster
        .wait("each listener's attachedRoutes and supportedKinds", |c| {
            attached(c) == listeners(1, 1)
        })
        .await;
    // Newer routes the listeners cannot serve: a second TCPRoute on the TCP listener, a
    // TLSRoute whose only hostname the older one has. Both stay Accepted (the Gateway
    // API's conformance asks it, istiod does it), their message names the route that takes
    // their connections, and the listeners do not count them.
    cluster.api.apply(tcp_route("db2", "tcp"));
    cluster.api.apply(json!({
        "apiVersion": HTTP, "kind": "TLSRoute",
        "metadata": {"name": "web2", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "edge"}], "hostnames": ["web.example.com"],
                 "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]},
    }));
    let message = |c: &Cluster, api_version: &str, kind: &str, route: &str| {
        c.condition(api_version, kind, route, "edge", "Accepted")
            .filter(|(status, reason, _)| status == "True" && reason == "Accepted")
            .map(|(_, _, message)| message)
            .unwrap_or_default()
    };
    cluster
        .wait("the newer TCPRoute Accepted, its message naming the older", |c| {
            message(c, tcp, "TCPRoute", "db2").contains(
                "listener \"tcp\" of Gateway shop/edge gives all its connections to TCPRoute shop/db",
            )
        })
        .await;
    cluster
        .wait(
            "the newer TLSRoute Accepted, its message naming the older",
            |c| {
                message(c, HTTP, "TLSRoute", "web2")
                    .contains("web.example.com goes to TLSRoute shop/web")
            },
        )
        .await;
    assert_eq!(message(&cluster, tcp, "TCPRoute", "db"), "Route was valid");
    assert_eq!(
        message(&cluster, HTTP, "TLSRoute", "web"),
        "Route was valid"
    );
    assert_eq!(
        attached(&cluster),
        listeners(1, 1),
        "only the routes served are counted"
    );
    // The older routes go: the newer ones take the listeners.
    cluster.api.delete("TCPRoute", "shop", "db");
    cluster.api.delete("TLSRoute", "shop", "web");
    cluster
        .wait("the newer routes served once the older went", |c| {
            message(c, tcp, "TCPRoute", "db2") == "Route was valid"
                && message(c, HTTP, "TLSRoute", "web2") == "Route was valid"
                && attached(c) == listeners(1, 1)
        })
        .await;
    cluster.api.delete("TCPRoute", "shop", "db2");
    cluster
        .wait("the TCP listener's count after its route went", |c| {
            attached(c) == listeners(1, 0)
        })
        .await;
    controller.abort();
}
