//! The registry at the size of a large cluster (issue #21's scale figures): by default
//! 1,000,000 pods on 5,000 nodes and 66,000 Services, the size at which ztunnel used 3 GB
//! (istio/ztunnel#667); weft's goal is 1 GB.
//!
//! Measured, on objects generated as the API server sends them and decoded as the
//! Kubernetes source decodes them (`cluster.rs`):
//! - memory: bytes the registry keeps allocated once its input is consumed (a counting
//!   global allocator), the peak while applying, and the process's resident set;
//! - the initial apply: decoding every object, then `Registry::apply` of one `Replace` per
//!   kind, as the first lists arrive;
//! - the lookups the agent makes per connection: outbound to a Service VIP (the Service,
//!   its waypoint, a ready endpoint, the endpoint's pod and identity), outbound to a pod IP,
//!   inbound to a pod (the pod by uid, the waypoints it must be reached through, STRICT mTLS,
//!   a policy only a waypoint can apply, its AuthorizationPolicies);
//! - change propagation at full size: one watch event's JSON (a pod added, relabelled,
//!   removed; an EndpointSlice marking a pod not ready) until a reader's snapshot has it;
//! - the watch traffic each agent asks of the API server at churn (`fanout.rs`).
//!
//! `cargo bench -p weft-config --bench scale [-- --quick] [--pods N --services N --nodes N]`
//! prints the figures, and each as a JSON line (`{"scenario", "metric", "unit", "value"}`)
//! on stdout, which `WEFT_BENCH_GROUPS=scale cargo xtask bench` reads into its report.
mod cluster;
mod fanout;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weft_config::api::security::MtlsMode;
use weft_config::api::{Kind, ObjectRef};
use weft_config::registry::{Change, Registry};

use cluster::Shape;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn counted(size: usize) {
    let now = ALLOCATED.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted(new_size);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;

/// One figure: printed for people on stderr, as JSON on stdout.
fn figure(scenario: &str, metric: &str, unit: &str, value: f64) {
    eprintln!("  {scenario} — {metric}: {value:.2} {unit}");
    println!(
        "{}",
        serde_json::json!({"scenario": scenario, "metric": metric, "unit": unit, "value": value})
    );
}

struct Args {
    shape: Shape,
    quick: bool,
}

fn args() -> Args {
    let mut shape = Shape {
        pods: 1_000_000,
        services: 66_000,
        nodes: 5_000,
    };
    let mut quick = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match arg.as_str() {
            "--quick" => quick = true,
            "--pods" => shape.pods = number("--pods"),
            "--services" => shape.services = number("--services"),
            "--nodes" => shape.nodes = number("--nodes"),
            // `cargo bench` passes `--bench`; criterion-style filters are not used.
            _ => {}
        }
    }
    assert!(
        shape.services * cluster::PODS_PER_SERVICE <= shape.pods,
        "every Service needs its {} pods",
        cluster::PODS_PER_SERVICE
    );
    Args { shape, quick }
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn resident() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Gives memory malloc keeps after frees (the generator's documents) back to the system,
/// so that the resident set is what is in use.
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of glibc's heap; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The first lists, one `Replace` per kind as the Kubernetes source sends them, with the
/// JSON size of every kind (for `fanout.rs`) and the time decoding took.
struct Initial {
    changes: Vec<Change>,
    sizes: fanout::Sizes,
    decode: Duration,
    /// Bytes allocated for the decoded objects of each kind (the input; the registry keeps
    /// what it derives of Pods, Services and EndpointSlices, not the decoded objects).
    decoded: Vec<(Kind, usize)>,
}

fn initial(shape: &Shape) -> Initial {
    let mut sizes = fanout::Sizes::default();
    let mut decode = Duration::ZERO;
    let mut decoded = Vec::new();
    let mut batch = |kind: Kind, documents: &mut dyn Iterator<Item = String>| {
        let mut candidates = Vec::new();
        let before = ALLOCATED.load(Ordering::Relaxed);
        for json in documents {
            sizes.add(kind, json.len());
            let started = Instant::now();
            candidates.push(cluster::decode(&json));
            decode += started.elapsed();
        }
        candidates.shrink_to_fit();
        let vector = candidates.len() * std::mem::size_of::<weft_config::registry::Candidate>();
        decoded.push((
            kind,
            ALLOCATED
                .load(Ordering::Relaxed)
                .saturating_sub(before + vector),
        ));
        Change::Replace {
            kinds: vec![kind],
            candidates,
        }
    };
    let namespaces = shape.namespaces();
    let mut changes = vec![
        batch(
            Kind::Namespace,
            &mut (0..namespaces).map(cluster::namespace_json),
        ),
        batch(Kind::Node, &mut (0..shape.nodes).map(cluster::node_json)),
        batch(
            Kind::Pod,
            &mut (0..shape.pods).map(|i| cluster::pod_json(shape, i, 0)),
        ),
        batch(
            Kind::Service,
            &mut (0..shape.services)
                .map(|s| cluster::service_json(shape, s, s < cluster::SERVICES_PER_NAMESPACE)),
        ),
        batch(
            Kind::EndpointSlice,
            &mut (0..shape.services).map(|s| cluster::slice_json(shape, s, None, None)),
        ),
    ];
    // The waypoint's own Service and pod are left out: a bound Service's connections then
    // find no waypoint pod, which changes no lookup's cost.
    let mut istio: Vec<Change> = cluster::istio_json(shape)
        .iter()
        .map(|json| Change::Apply(cluster::decode(json)))
        .collect();
    changes.append(&mut istio);
    Initial {
        changes,
        sizes,
        decode,
        decoded,
    }
}

fn main() {
    let Args { shape, quick } = args();
    eprintln!(
        "scale: {} pods on {} nodes, {} Services in {} namespaces{}",
        shape.pods,
        shape.nodes,
        shape.services,
        shape.namespaces(),
        if quick { " (quick)" } else { "" }
    );
    let size = format!(
        "{}k pods, {}k services",
        shape.pods / 1000,
        shape.services / 1000
    );

    trim_heap();
    let before = ALLOCATED.load(Ordering::Relaxed);
    let (rss_before, _) = resident();
    let Initial {
        changes,
        sizes,
        decode,
        decoded,
    } = initial(&shape);
    let input = ALLOCATED.load(Ordering::Relaxed) - before;
    let registry = Registry::default();
    PEAK.store(ALLOCATED.load(Ordering::Relaxed), Ordering::Relaxed);
    let started = Instant::now();
    let report = registry.apply(changes);
    let apply = started.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.workload_count(), shape.pods);
    assert_eq!(snapshot.service_count(), shape.services);
    let retained = ALLOCATED.load(Ordering::Relaxed) - before;
    trim_heap();
    let (rss, _) = resident();

    let scenario = format!("initial apply, {size}");
    figure(
        &scenario,
        "decode every object (JSON → typed)",
        "s",
        decode.as_secs_f64(),
    );
    figure(
        &scenario,
        "Registry::apply of the first lists",
        "s",
        apply.as_secs_f64(),
    );
    let memory = format!("memory, {size}");
    figure(&memory, "registry, allocated", "MiB", retained as f64 / MIB);
    figure(
        &memory,
        "registry, allocated per pod (all kinds)",
        "B",
        retained as f64 / shape.pods as f64,
    );
    figure(
        &memory,
        "decoded input, allocated",
        "MiB",
        input as f64 / MIB,
    );
    for (kind, bytes) in decoded {
        figure(
            &memory,
            &format!("decoded {kind} objects (input)"),
            "MiB",
            bytes as f64 / MIB,
        );
    }
    figure(
        &memory,
        "peak while applying (input included)",
        "MiB",
        peak as f64 / MIB,
    );
    figure(&memory, "process RSS growth", "MiB", rss - rss_before);

    lookups(&registry, &shape, &size, quick);
    propagation(&registry, &shape, &size, quick);
    fanout::report(&sizes, &shape);
}

/// A small deterministic generator (xorshift), so runs look up the same addresses.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Mean time per lookup, over lookups of random pods and Services (so caches hold little
/// of what is looked up, as in a large cluster).
fn lookups(registry: &Registry, shape: &Shape, size: &str, quick: bool) {
    let n = if quick { 200_000 } else { 1_000_000 };
    let scenario = format!("per-connection lookups, {size}");
    let services: Vec<IpAddr> = {
        let mut rng = Rng(0x5eed);
        (0..n)
            .map(|_| IpAddr::V4(shape.service_vip(rng.below(shape.services))))
            .collect()
    };
    let pods: Vec<IpAddr> = {
        let mut rng = Rng(0xfeed);
        (0..n)
            .map(|_| IpAddr::V4(shape.pod_ip(rng.below(shape.pods))))
            .collect()
    };
    let uids: Vec<std::sync::Arc<str>> = pods
        .iter()
        .map(|ip| {
            registry
                .load()
                .workload_by_ip(*ip)
                .expect("generated pod")
                .uid
                .clone()
        })
        .collect();
    let time = |metric: &str, f: &mut dyn FnMut(usize) -> usize| {
        let started = Instant::now();
        let mut found = 0;
        for k in 0..n {
            found += f(k);
        }
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        assert_eq!(found, n, "{metric}: every lookup finds its object");
        figure(&scenario, metric, "ns", ns);
    };
    // What `resolve_near` (node-agent/src/proxy/resolve.rs) asks for a Service address.
    time("outbound to a Service VIP", &mut |k| {
        let snapshot = registry.load();
        let Some(service) = snapshot.service_by_vip(black_box(services[k])) else {
            return 0;
        };
        if snapshot.service_waypoint(service).is_some() {
            return 1;
        }
        let ready: Vec<_> = service.endpoints.iter().filter(|e| e.ready).collect();
        let endpoint = ready[k % ready.len()];
        let identity = snapshot
            .endpoint_workload(endpoint)
            .filter(|w| w.in_mesh)
            .map(|w| w.identity.len());
        usize::from(identity.is_some() && service.endpoint_port(80, endpoint).is_some())
    });
    time("outbound to a pod IP", &mut |k| {
        let snapshot = registry.load();
        match snapshot.workload_by_ip(black_box(pods[k])) {
            Some(w) if snapshot.workload_waypoint(w).is_none() && w.in_mesh => {
                usize::from(!w.identity.is_empty())
            }
            _ => 0,
        }
    });
    // What `Mesh::admit` (node-agent/src/mesh.rs) asks for a connection to a pod.
    time("inbound to a pod (admission)", &mut |k| {
        let snapshot = registry.load();
        let Some(w) = snapshot.workload_by_uid(black_box(&uids[k])) else {
            return 0;
        };
        let waypoints = snapshot.required_waypoints(w).len();
        let strict = snapshot.mtls_mode(w, 8080) == MtlsMode::Strict;
        let refused = snapshot.unenforceable_policy(w).is_some();
        let policies = snapshot.authorization_policies_for(w).len();
        black_box((waypoints, policies));
        usize::from(strict && !refused)
    });
}

/// Percentiles of durations, in µs.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99), at(1.0))
}

/// One watch event's JSON at full size until a reader's snapshot shows it: decoding, the
/// registry's apply, publishing. Each case `reps` times.
fn propagation(registry: &Registry, shape: &Shape, size: &str, quick: bool) {
    let reps = if quick { 30 } else { 200 };
    let scenario = format!("change propagation, {size}");
    let mut versions = registry.subscribe();
    let mut apply = |change: Change| -> Duration {
        let started = Instant::now();
        registry.apply([change]);
        let elapsed = started.elapsed();
        assert!(
            versions.has_changed().unwrap_or(false),
            "a change publishes a new version"
        );
        versions.mark_unchanged();
        elapsed
    };
    let event = |json: &str| Change::Apply(cluster::decode(json));
    let (mut added, mut relabelled, mut removed, mut endpoint) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..reps {
        // A pod beyond the generated ones: the next rank on its node.
        let i = shape.pods + k;
        let ip: IpAddr = IpAddr::V4(shape.pod_ip(i));
        let started = Instant::now();
        apply(event(&cluster::pod_json(shape, i, 0)));
        assert!(registry.load().workload_by_ip(ip).is_some());
        added.push(started.elapsed());

        let started = Instant::now();
        apply(event(&cluster::pod_json(shape, i, 1 + k as u64)));
        let generation = (1 + k).to_string();
        assert_eq!(
            registry
                .load()
                .workload_by_ip(ip)
                .and_then(|w| w.labels.get("generation").cloned()),
            Some(generation)
        );
        relabelled.push(started.elapsed());

        let started = Instant::now();
        let name = cluster::pod_name(shape, i);
        let namespace = format!("ns-{}", shape.namespace_of_pod(i));
        apply(Change::Delete(ObjectRef::new(Kind::Pod, namespace, name)));
        assert!(registry.load().workload_by_ip(ip).is_none());
        removed.push(started.elapsed());

        // A Service's slice: one of its pods not ready, then ready again.
        let s = (k * 7919) % shape.services;
        let pod = shape.service_pods(s).start;
        let vip = IpAddr::V4(shape.service_vip(s));
        let pod_ip = IpAddr::V4(shape.pod_ip(pod));
        for not_ready in [Some(pod), None] {
            let started = Instant::now();
            apply(event(&cluster::slice_json(shape, s, not_ready, None)));
            let ready = registry
                .load()
                .service_by_vip(vip)
                .and_then(|svc| svc.endpoints.iter().find(|e| e.address == pod_ip))
                .map(|e| e.ready);
            assert_eq!(ready, Some(not_ready.is_none()));
            endpoint.push(started.elapsed());
        }
    }
    for (case, samples) in [
        ("pod added", added),
        ("pod relabelled", relabelled),
        ("pod removed", removed),
        ("EndpointSlice updated (a pod not ready)", endpoint),
    ] {
        let (p50, p99, max) = percentiles(samples);
        figure(&scenario, &format!("{case}, p50"), "µs", p50);
        figure(&scenario, &format!("{case}, p99"), "µs", p99);
        figure(&scenario, &format!("{case}, max"), "µs", max);
    }
}
