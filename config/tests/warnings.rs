//! What weft accepts and does not act on is warned about, naming the object and the field:
//! fields an Istio or Gateway API schema does not have, kinds weft does not read, L7 rules
//! on hosts no waypoint serves, fields weft reads and ignores. A security field weft
//! cannot honour is refused (a policy attached to what no waypoint serves), or fails closed.
use std::path::PathBuf;
use std::sync::Arc;

use weft_config::registry::{Change, Registry};
use weft_config::source::yaml;

fn registry_of(text: &str) -> Registry {
    let documents = yaml::parse(text, Arc::new(PathBuf::from("test.yaml"))).expect("YAML");
    assert!(documents.errors.is_empty(), "{:?}", documents.errors);
    let registry = Registry::default();
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    registry
}

/// `field: reason` of every warning of the registry, in its order.
fn warnings(registry: &Registry) -> Vec<String> {
    registry
        .snapshot()
        .warnings()
        .map(|w| format!("{} {}: {}", w.object, w.field, w.reason))
        .collect()
}

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: bound, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {selector: {app: bound}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: shop}
spec: {selector: {app: plain}, ports: [{name: http, port: 80}]}
"#;

#[test]
fn unknown_fields_of_istio_objects_are_named_kubernetes_ones_are_not() {
    let registry = registry_of(&format!(
        r#"{SHOP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bound, namespace: shop}}
spec:
  hosts: [bound]
  http:
  - route: [{{destination: {{host: bound}}}}]
  - rout: [{{destination: {{host: bound}}}}]
    route: [{{destination: {{host: bound, subsett: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: bound, namespace: shop}}
spec:
  host: bound
  trafficPolicy: {{connectionPool: {{tcp: {{maxConections: 5}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: other, namespace: shop}}
spec: {{ports: [{{port: 80}}], someField: 1}}
"#
    ));
    let unknown: Vec<String> = warnings(&registry)
        .into_iter()
        .filter(|w| w.contains("unknown field"))
        .collect();
    assert_eq!(
        unknown,
        [
            "VirtualService shop/bound spec.http[1].rout: unknown field \"spec.http[1].rout\": \
             not in the VirtualService schema, ignored (misspelt?)",
            "VirtualService shop/bound spec.http[1].route[0].destination.subsett: unknown field \
             \"spec.http[1].route[0].destination.subsett\": not in the VirtualService schema, \
             ignored (misspelt?)",
            "DestinationRule shop/bound spec.trafficPolicy.connectionPool.tcp.maxConections: \
             unknown field \"spec.trafficPolicy.connectionPool.tcp.maxConections\": not in the \
             DestinationRule schema, ignored (misspelt?)",
        ]
    );
}

#[test]
fn kinds_weft_does_not_read_are_named_as_ignored() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: shop}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: auth, namespace: shop}
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: pc, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: vms, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
"#;
    let documents = yaml::parse(text, Arc::new(PathBuf::from("extra.yaml"))).expect("YAML");
    assert!(documents.candidates.is_empty());
    let ignored: Vec<String> = documents.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        ignored,
        [
            "extra.yaml:1: Sidecar shop/default: networking.istio.io/Sidecar is not supported by weft: ignored",
            "extra.yaml:2: EnvoyFilter shop/lua: networking.istio.io/EnvoyFilter is not supported by weft: ignored",
            "extra.yaml:3: WasmPlugin shop/auth: extensions.istio.io/WasmPlugin is not supported by weft: ignored",
            "extra.yaml:4: ProxyConfig shop/pc: networking.istio.io/ProxyConfig is not supported by weft: ignored",
            "extra.yaml:5: WorkloadEntry shop/vm: networking.istio.io/WorkloadEntry is not supported by weft: ignored",
            "extra.yaml:6: WorkloadGroup shop/vms: networking.istio.io/WorkloadGroup is not supported by weft: ignored",
        ],
        "a Deployment is not meant for Istio and is not warned about"
    );
}

#[test]
fn l7_rules_on_a_host_without_a_waypoint_are_warned_about() {
    let registry = registry_of(&format!(
        r#"{SHOP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: plain, namespace: shop}}
spec:
  hosts: [plain]
  http: [{{route: [{{destination: {{host: plain}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: plain, namespace: shop}}
spec: {{host: plain.shop.svc.cluster.local}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bound, namespace: shop}}
spec:
  hosts: [bound]
  http: [{{route: [{{destination: {{host: bound}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: bound, namespace: shop}}
spec: {{host: bound}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}
spec: {{hosts: [api.example.com], ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: DNS}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: other, namespace: shop}}
spec: {{hosts: [other.example.com], ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: DNS}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: entries, namespace: shop}}
spec:
  hosts: [api.example.com, other.example.com]
  http: [{{timeout: 2s, route: [{{destination: {{host: api.example.com}}}}]}}]
"#
    ));
    assert_eq!(
        warnings(&registry),
        [
            "VirtualService shop/entries spec.hosts[1]: \"other.example.com\" has no waypoint: L7 \
             rules apply only through a waypoint: label the ServiceEntry istio.io/use-waypoint",
            "VirtualService shop/plain spec.hosts[0]: \"plain\" has no waypoint: L7 rules apply \
             only through a waypoint: label the Service istio.io/use-waypoint",
            "DestinationRule shop/plain spec.host: \"plain.shop.svc.cluster.local\" has no \
             waypoint: L7 rules apply only through a waypoint: label the Service \
             istio.io/use-waypoint",
        ]
    );
    // Labelling the namespace binds its Services: the warnings go.
    let documents = yaml::parse(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}\n",
        Arc::new(PathBuf::from("ns.yaml")),
    )
    .expect("YAML");
    registry.apply(documents.candidates.into_iter().map(Change::Apply));
    assert_eq!(warnings(&registry), Vec::<String>::new());
}

#[test]
fn rules_an_istio_gateway_applies_need_no_waypoint() {
    let registry = registry_of(&format!(
        r#"{SHOP}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge, namespace: shop}}
spec:
  hosts: ["shop.example.com"]
  gateways: [ingress]
  http: [{{route: [{{destination: {{host: plain}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: plain, namespace: shop}}
spec: {{host: plain, trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}}}
"#
    ));
    assert_eq!(warnings(&registry), Vec::<String>::new());
}

#[test]
fn fields_weft_reads_and_does_not_act_on_are_named() {
    let registry = registry_of(&format!(
        r#"{SHOP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bound, namespace: shop}}
spec:
  hosts: [bound]
  exportTo: ["."]
  http:
  - delegate: {{name: other}}
  - retries: {{attempts: 2, retryRemoteLocalities: true}}
    fault:
      delay: {{exponentialDelay: 1s, percentage: {{value: 10}}}}
      abort: {{http2Error: CANCEL, percentage: {{value: 10}}}}
    route: [{{destination: {{host: bound}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: bound, namespace: shop}}
spec:
  host: bound
  exportTo: ["."]
  workloadSelector: {{matchLabels: {{app: client}}}}
  trafficPolicy:
    loadBalancer: {{simple: LEAST_REQUEST, warmupDurationSecs: 30s}}
    connectionPool:
      tcp: {{maxConnections: 10, idleTimeout: 1h, maxConnectionDuration: 10m}}
      http: {{http2MaxRequests: 10, idleTimeout: 30s, maxConcurrentStreams: 100, h2UpgradePolicy: UPGRADE, useClientProtocol: true}}
  subsets:
  - name: v1
    labels: {{version: v1}}
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 80}}
        connectionPool: {{tcp: {{idleTimeout: 5m}}}}
"#
    ));
    let ignored = " is accepted but not supported by weft: ignored";
    let found: Vec<String> = warnings(&registry)
        .into_iter()
        .filter(|w| w.contains("accepted but not supported by weft"))
        .map(|w| {
            // `<object> <field>: accepted …` → `<object> <field>`
            w.split(": accepted").next().unwrap_or_default().to_string() + ignored
        })
        .collect();
    let expected: Vec<String> = [
        "VirtualService shop/bound spec.http[1].retries.retryRemoteLocalities",
        "VirtualService shop/bound spec.http[1].fault.delay.exponentialDelay",
        "VirtualService shop/bound spec.http[1].fault.abort.http2Error",
        "DestinationRule shop/bound spec.workloadSelector",
    ]
    .iter()
    .map(|w| format!("{w}{ignored}"))
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn a_policy_attached_to_what_no_waypoint_serves_is_refused_or_fails_closed() {
    // A kind no waypoint attaches policies to: refused, naming the field.
    let documents = yaml::parse(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deploy, namespace: shop}
spec:
  targetRefs: [{group: apps, kind: Deployment, name: web}]
  action: ALLOW
  rules: [{from: [{source: {namespaces: [shop]}}]}]
"#,
        Arc::new(PathBuf::from("ap.yaml")),
    )
    .expect("YAML");
    let registry = Registry::default();
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    let refused: Vec<String> = report
        .refused
        .iter()
        .map(|r| format!("{}: {}", r.field, r.reason))
        .collect();
    assert_eq!(
        refused,
        [
            "spec.targetRefs[0]: weft cannot attach a policy to apps/Deployment (only a waypoint's \
          Gateway, group gateway.networking.k8s.io; a Service, group \"\"; a ServiceEntry, group \
          networking.istio.io): it would be enforced nowhere"
        ]
    );

    // An ALLOW policy on a Service with no waypoint: warned about, and the agent refuses
    // connections to the Service's pods.
    let registry = registry_of(&format!(
        r#"{SHOP}
---
apiVersion: v1
kind: Pod
metadata: {{name: plain-0, namespace: shop, uid: p0, labels: {{app: plain}}}}
spec: {{nodeName: node-0, serviceAccountName: plain}}
status: {{phase: Running, podIP: 10.244.0.7, podIPs: [{{ip: 10.244.0.7}}]}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: only-shop, namespace: shop}}
spec:
  targetRefs: [{{group: "", kind: Service, name: plain}}]
  action: ALLOW
  rules: [{{from: [{{source: {{namespaces: [shop]}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: shop}}
spec:
  targetRefs: [{{group: "", kind: Service, name: bound}}]
  action: DENY
  rules: [{{to: [{{operation: {{paths: ["/admin"]}}}}]}}]
"#
    ));
    assert_eq!(
        warnings(&registry),
        [
            "AuthorizationPolicy shop/only-shop spec.targetRefs[0]: Service shop/plain has no \
          waypoint, so this policy cannot be applied: the agent refuses every connection to its \
          workloads until it has one (fail closed); L7 rules apply only through a waypoint: \
          label the Service istio.io/use-waypoint"
        ]
    );
    let snapshot = registry.snapshot();
    let pod = snapshot
        .workload("shop", "plain-0")
        .expect("the pod")
        .clone();
    assert_eq!(
        snapshot.unenforceable_policy(&pod).as_deref(),
        Some(
            "AuthorizationPolicy shop/only-shop targets Service shop/plain, which has no waypoint \
             to apply it: refused (fail closed)"
        )
    );
    // Bound to the waypoint, the policy is the waypoint's to apply.
    let documents = yaml::parse(
        "apiVersion: v1\nkind: Service\nmetadata: {name: plain, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}\nspec: {selector: {app: plain}, ports: [{name: http, port: 80}]}\n",
        Arc::new(PathBuf::from("svc.yaml")),
    )
    .expect("YAML");
    registry.apply(documents.candidates.into_iter().map(Change::Apply));
    let snapshot = registry.snapshot();
    let pod = snapshot
        .workload("shop", "plain-0")
        .expect("the pod")
        .clone();
    assert_eq!(snapshot.unenforceable_policy(&pod), None);
    assert_eq!(warnings(&registry), Vec::<String>::new());
}
