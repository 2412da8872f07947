//! Registry apply time and memory for 1k, 10k and 100k workloads, with a tenth as many
//! services (each with an EndpointSlice of its ten pods).
//!
//! `cargo bench -p weft-config --bench registry`. Memory is measured with a counting global
//! allocator: bytes still allocated once the registry is built and its input dropped.
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
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
use weft_config::registry::{Candidate, Change, Registry};

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
        let vip = format!("10.96.{}.{}", s / 256, s % 256);
        out.push(Object::from(Service {
            metadata: meta(Some(&namespace), format!("app-{s}"), &[]),
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
        }));
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
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
