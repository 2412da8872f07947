//! Registry apply time and memory for 1k, 10k and 100k workloads, with a tenth as many
//! services (each with an EndpointSlice of its ten pods).
//!
//! Next to the workload lookup by IP, the lookups the node agent makes per connection and
//! the waypoint per request: a service by VIP and its waypoint, a host's routes, a
//! subset's endpoints, the AuthorizationPolicies of a workload.
//!
//! With 5,000 services (50k workloads): the waypoint a pod must be reached through (the
//! destination agent asks on every inbound connection), from the registry's index and
//! from the scan over every Service the agent used to make, for comparison.
//!
//! `cargo bench -p weft-config --bench registry`. Memory is measured with a counting global
//! allocator: bytes still allocated once the registry is built and its input dropped.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_config::api::kubernetes::{
    Endpoint, EndpointPort, EndpointSlice, Namespace, ObjectReference, Pod, PodIp, PodSpec,
    PodStatus, Service, ServicePort, ServiceSpec,
};
use weft_config::api::{Kind, Object};
use weft_config::registry::model::Waypoint;
use weft_config::registry::{Candidate, Change, Registry, Snapshot, Workload};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PODS_PER_SERVICE: usize = 10;
const PODS_PER_NAMESPACE: usize = 1000;

fn meta(namespace: Option<&str>, name: String, labels: &[(&str, String)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: namespace.map(str::to_string),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn pod_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 64 + i / 65536, (i / 256) % 256, i % 256)
}

fn pod(i: usize) -> Pod {
    let namespace = format!("ns-{}", i / PODS_PER_NAMESPACE);
    let service = i / PODS_PER_SERVICE;
    let mut metadata = meta(
        Some(&namespace),
        format!("app-{service}-{i}"),
        &[
            ("app", format!("app-{service}")),
            ("version", format!("v{}", i % 3)),
        ],
    );
    metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    Pod {
        metadata,
        spec: PodSpec {
            node_name: Some(format!("node-{}", i % 100)),
            service_account_name: Some(format!("app-{service}")),
            ..Default::default()
        },
        status: PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(pod_ip(i)),
            pod_ips: vec![PodIp { ip: pod_ip(i) }],
            ..Default::default()
        },
    }
}

/// Service `app-<s>` in its namespace, with a VIP of its own and port 80 → 8080.
fn service(s: usize, labels: &[(&str, String)]) -> Service {
    let namespace = format!("ns-{}", s * PODS_PER_SERVICE / PODS_PER_NAMESPACE);
    let vip = service_vip(s);
    Service {
        metadata: meta(Some(&namespace), format!("app-{s}"), labels),
        spec: ServiceSpec {
            cluster_ip: Some(vip.clone()),
            cluster_ips: vec![vip],
            ports: vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }],
            selector: Some([("app".to_string(), format!("app-{s}"))].into()),
            ..Default::default()
        },
    }
}

fn service_vip(s: usize) -> String {
    format!("10.96.{}.{}", s / 256, s % 256)
}

fn objects(workloads: usize) -> Vec<Object> {
    let mut out = Vec::new();
    for n in 0..workloads.div_ceil(PODS_PER_NAMESPACE) {
        out.push(Object::from(Namespace {
            metadata: meta(
                None,
                format!("ns-{n}"),
                &[("istio.io/dataplane-mode", "ambient".into())],
            ),
        }));
    }
    for i in 0..workloads {
        out.push(Object::from(pod(i)));
    }
    for s in 0..workloads / PODS_PER_SERVICE {
        let namespace = format!("ns-{}", s * PODS_PER_SERVICE / PODS_PER_NAMESPACE);
        out.push(Object::from(service(s, &[])));
        out.push(Object::from(EndpointSlice {
            metadata: meta(
                Some(&namespace),
                format!("app-{s}-x1"),
                &[("kubernetes.io/service-name", format!("app-{s}"))],
            ),
            address_type: "IPv4".into(),
            endpoints: (0..PODS_PER_SERVICE)
                .map(|k| {
                    let i = s * PODS_PER_SERVICE + k;
                    Endpoint {
                        addresses: vec![pod_ip(i)],
                        node_name: Some(format!("node-{}", i % 100)),
                        target_ref: Some(ObjectReference {
                            kind: Some("Pod".into()),
                            namespace: Some(namespace.clone()),
                            name: Some(format!("app-{s}-{i}")),
                            uid: None,
                        }),
                        ..Default::default()
                    }
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        }));
    }
    out
}

/// What the per-request lookups need on top of the workloads, for service `app-0` in
/// `ns-0`: a waypoint it is bound to, a DestinationRule with a subset per `version` label
/// and a VirtualService, and AuthorizationPolicies in the root namespace and in `ns-0`
/// (one selecting its pods, one selecting other pods).
const MESH_CONFIG: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: ns-0, labels: {istio.io/waypoint-for: service}}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app-0, namespace: ns-0}
spec:
  host: app-0
  subsets:
  - {name: v0, labels: {version: v0}}
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app-0, namespace: ns-0}
spec:
  hosts: [app-0]
  http: [{route: [{destination: {host: app-0, subset: v0}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny-plaintext, namespace: istio-system}
spec:
  action: DENY
  rules: [{from: [{source: {notPrincipals: ["*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: app-0, namespace: ns-0}
spec:
  selector: {matchLabels: {app: app-0}}
  rules: [{from: [{source: {namespaces: [ns-0]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: app-1, namespace: ns-0}
spec:
  selector: {matchLabels: {app: app-1}}
  rules: [{from: [{source: {namespaces: [ns-1]}}]}]
"#;

const SERVICE_HOST: &str = "app-0.ns-0.svc.cluster.local";

fn mesh_config() -> Vec<Change> {
    let documents = weft_config::source::yaml::parse(MESH_CONFIG, Arc::new(PathBuf::from("bench")))
        .expect("mesh config");
    assert!(documents.errors.is_empty(), "{:?}", documents.errors);
    let bound = service(0, &[("istio.io/use-waypoint", "waypoint".into())]);
    std::iter::once(Object::from(bound).into())
        .chain(documents.candidates)
        .map(Change::Apply)
        .collect()
}

fn initial_list(objects: &[Object]) -> Vec<Change> {
    vec![Change::Replace {
        kinds: Kind::ALL.to_vec(),
        candidates: objects.iter().cloned().map(Candidate::from).collect(),
    }]
}

fn report_memory(workloads: usize) {
    let input = objects(workloads);
    let before = ALLOCATED.load(Ordering::Relaxed);
    let registry = Registry::default();
    registry.apply(initial_list(&input));
    let with_input = ALLOCATED.load(Ordering::Relaxed).saturating_sub(before);
    // What stays is the registry alone: the objects it accepted (shared with the input
    // until now) and its indexes.
    drop(input);
    let retained = ALLOCATED.load(Ordering::Relaxed).saturating_sub(before);
    let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "registry memory, {workloads} workloads / {} services: {:.1} MiB retained, {} bytes per workload ({:.1} MiB measured while the input was alive)",
        registry.snapshot().service_count(),
        mib(retained),
        retained / workloads,
        mib(with_input),
    );
}

fn bench(c: &mut Criterion) {
    for workloads in [1_000, 10_000, 100_000] {
        report_memory(workloads);
        let input = objects(workloads);
        let mut group = c.benchmark_group(format!("registry/{workloads}-workloads"));
        group.throughput(Throughput::Elements(workloads as u64));
        if workloads >= 100_000 {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(8));
        } else {
            group.sample_size(20);
        }
        group.bench_function("apply initial list", |b| {
            b.iter_batched(
                || (Registry::default(), initial_list(&input)),
                |(registry, changes)| {
                    registry.apply(changes);
                    registry
                },
                BatchSize::PerIteration,
            )
        });
        // One pod changing in a loaded registry: the steady state of a live cluster.
        group.throughput(Throughput::Elements(1));
        let registry = Registry::default();
        registry.apply(initial_list(&input));
        let mut generation = 0u64;
        group.bench_function("apply one pod update", |b| {
            b.iter_batched(
                || {
                    generation += 1;
                    let mut changed = pod(workloads / 2);
                    changed
                        .metadata
                        .labels
                        .get_or_insert_default()
                        .insert("generation".into(), generation.to_string());
                    vec![Change::Apply(Object::from(changed).into())]
                },
                |changes| registry.apply(changes),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("look up workload by IP", |b| {
            let ip = pod_ip(workloads / 3).parse().expect("ip");
            b.iter(|| registry.load().workload_by_ip(ip).map(|w| w.uid.len()))
        });
        // The other lookups the agent makes per connection and the waypoint per request.
        registry.apply(mesh_config());
        let snapshot = registry.snapshot();
        let refused: Vec<String> = snapshot.refused().map(ToString::to_string).collect();
        assert!(refused.is_empty(), "{refused:?}");
        let vip = service_vip(0).parse().expect("vip");
        let workload = snapshot
            .workload_by_ip(pod_ip(0).parse().expect("ip"))
            .expect("workload")
            .clone();
        assert!(
            snapshot
                .service_by_vip(vip)
                .and_then(|s| snapshot.service_waypoint(s))
                .is_some()
        );
        assert_eq!(snapshot.subset_endpoints(SERVICE_HOST, "v0").len(), 4);
        assert_eq!(snapshot.authorization_policies_for(&workload).len(), 2);
        group.bench_function("look up service by VIP and its waypoint", |b| {
            b.iter(|| {
                let snapshot = registry.load();
                snapshot
                    .service_by_vip(black_box(vip))
                    .and_then(|s| snapshot.service_waypoint(s))
                    .map(|w| w.port)
            })
        });
        group.bench_function("look up routes for host", |b| {
            b.iter(|| {
                registry
                    .load()
                    .routes_for_host(black_box(SERVICE_HOST))
                    .map(|r| r.virtual_services.len())
            })
        });
        group.bench_function("look up subset endpoints (4 of 10 pods)", |b| {
            b.iter(|| {
                registry
                    .load()
                    .subset_endpoints(black_box(SERVICE_HOST), black_box("v0"))
                    .len()
            })
        });
        group.bench_function("look up authorization policies for workload", |b| {
            b.iter(|| {
                registry
                    .load()
                    .authorization_policies_for(black_box(&workload))
                    .len()
            })
        });
        group.finish();
    }
}

/// The agent's former per-connection search for the waypoint traffic to `workload` must
/// come through: its own binding, else the first bound Service of its namespace (in hash
/// order) whose endpoints name it. Kept here only to measure what the index replaced.
fn scan_required_waypoint<'s>(
    snapshot: &'s Snapshot,
    workload: &Workload,
) -> Option<&'s Arc<Waypoint>> {
    if let Some(waypoint) = snapshot.workload_waypoint(workload) {
        return Some(waypoint);
    }
    let backs = |service: &weft_config::registry::Service| {
        *service.namespace == *workload.namespace
            && service.endpoints.iter().any(|e| {
                e.target.as_ref().is_some_and(|(ns, name)| {
                    **ns == *workload.namespace && **name == *workload.name
                })
            })
    };
    snapshot
        .services()
        .filter(|s| *s.namespace == *workload.namespace && s.waypoint.is_some())
        .filter(|s| backs(s))
        .find_map(|s| snapshot.service_waypoint(s))
}

fn required_waypoint(c: &mut Criterion) {
    const SERVICES: usize = 5_000;
    let workloads = SERVICES * PODS_PER_SERVICE;
    let registry = Registry::default();
    registry.apply(initial_list(&objects(workloads)));
    registry.apply(mesh_config());
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.service_count(), SERVICES);
    let pod = |i: usize| {
        snapshot
            .workload_by_ip(pod_ip(i).parse().expect("ip"))
            .expect("workload")
            .clone()
    };
    // A pod of `app-0`, which `mesh_config` binds to a waypoint; and one of a Service
    // without a waypoint, the common case, where the scan never stops early.
    let bound = pod(0);
    let unbound = pod(workloads / 2);
    assert!(scan_required_waypoint(&snapshot, &bound).is_some());
    assert_eq!(snapshot.required_waypoints(&bound).len(), 1);
    assert!(scan_required_waypoint(&snapshot, &unbound).is_none());
    assert!(snapshot.required_waypoints(&unbound).is_empty());
    let mut group = c.benchmark_group("registry/required waypoint lookup with 5,000 services");
    for (case, workload) in [
        ("pod behind a bound service", &bound),
        ("pod behind no waypoint", &unbound),
    ] {
        group.bench_function(format!("scan of every service, {case}"), |b| {
            b.iter(|| scan_required_waypoint(&snapshot, black_box(workload)).map(|w| w.port))
        });
        group.bench_function(format!("index, {case}"), |b| {
            b.iter(|| snapshot.required_waypoints(black_box(workload)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench, required_waypoint);
criterion_main!(benches);
