//! DestinationRule traffic policy per request: `Balancer::pick` (ROUND_ROBIN, RANDOM,
//! LEAST_REQUEST, consistent hash on a header) over 3 and 100 endpoints, with the pick's
//! in-flight guard dropped as a finished request drops it; `OutlierDetector::filter` next
//! to copying the candidates (what a cluster without outlier detection does); and a
//! `CircuitBreaker::try_request` permit acquired and dropped next to an `Arc` clone and
//! drop.
//!
//! `cargo bench -p weft-waypoint --bench balance`.
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use weft_waypoint::upstream::balance::{Balancer, HashInput};
use weft_waypoint::upstream::limits::CircuitBreaker;
use weft_waypoint::upstream::outlier::{Outcome, OutlierDetector};
use weft_waypoint::upstream::policy::{
    ConsistentHash, DEFAULT_MINIMUM_RING_SIZE, HashKey, HashTable, LbPolicy, OutlierConfig,
    PoolLimits,
};

fn endpoints(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            let [_, _, hi, lo] = u32::try_from(i).expect("few endpoints").to_be_bytes();
            SocketAddr::from(([10, 64, hi, lo.wrapping_add(1)], 8080))
        })
        .collect()
}

/// Requests from 64 different users, cycled through so the hash lands all over the ring.
fn user_headers() -> Vec<HeaderMap> {
    (0..64)
        .map(|i| {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-user",
                HeaderValue::from_str(&format!("user-{i}")).expect("header value"),
            );
            headers
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let users = user_headers();
    for n in [3, 100] {
        let candidates = endpoints(n);
        let mut group = c.benchmark_group(format!("balance/pick/{n} endpoints"));
        let policies = [
            ("ROUND_ROBIN", LbPolicy::RoundRobin),
            ("RANDOM", LbPolicy::Random),
            ("LEAST_REQUEST", LbPolicy::LeastRequest),
            (
                "consistent hash on a header",
                LbPolicy::ConsistentHash(ConsistentHash {
                    key: Some(HashKey::Header("x-user".into())),
                    table: HashTable::Ring {
                        minimum_size: DEFAULT_MINIMUM_RING_SIZE,
                    },
                }),
            ),
        ];
        for (name, policy) in policies {
            let balancer = Balancer::with_seed(policy, 1);
            // The first pick builds the snapshot (and ring); every later one reuses it.
            drop(balancer.pick(&candidates, &HashInput::default()));
            let mut i = 0usize;
            group.bench_function(name, |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    let input = HashInput {
                        headers: Some(&users[i % users.len()]),
                        ..HashInput::default()
                    };
                    // Dropped at once: the request's in-flight count goes back down.
                    balancer
                        .pick(black_box(&candidates), black_box(&input))
                        .map(|pick| pick.endpoint)
                })
            });
        }
        group.finish();
    }
}

fn bench_outlier(c: &mut Criterion) {
    let now = Instant::now();
    for n in [3, 100] {
        let candidates = endpoints(n);
        let mut group = c.benchmark_group(format!("balance/outlier filter/{n} endpoints"));
        group.bench_function("no outlier detection (copy the candidates)", |b| {
            b.iter(|| black_box(&candidates).to_vec())
        });
        let healthy = OutlierDetector::new(OutlierConfig::default(), now);
        drop(healthy.filter(&candidates, now));
        group.bench_function("none ejected", |b| {
            b.iter(|| healthy.filter(black_box(&candidates), now))
        });
        if n >= 10 {
            // maxEjectionPercent (10% by default) ejected: five 503s in a row each.
            let ejecting = OutlierDetector::new(OutlierConfig::default(), now);
            drop(ejecting.filter(&candidates, now));
            for endpoint in candidates.iter().step_by(10) {
                for _ in 0..5 {
                    ejecting.record(*endpoint, Outcome::Response(503), now);
                }
            }
            let kept = ejecting.filter(&candidates, now).len();
            assert_eq!(kept, n - n / 10, "a tenth ejected");
            group.bench_function("10% ejected", |b| {
                b.iter(|| ejecting.filter(black_box(&candidates), now))
            });
        }
        group.finish();
    }
}

fn bench_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/circuit breaker");
    let shared = Arc::new(0u32);
    group.bench_function("Arc clone + drop (baseline)", |b| {
        b.iter(|| drop(black_box(Arc::clone(&shared))))
    });
    let unlimited = CircuitBreaker::new(&PoolLimits::default());
    group.bench_function("try_request + drop, under the limit", |b| {
        b.iter(|| black_box(unlimited.try_request()).is_ok())
    });
    let full = CircuitBreaker::new(&PoolLimits {
        max_requests: 1,
        ..PoolLimits::default()
    });
    let _held = full.try_request().expect("the one request allowed");
    group.bench_function("try_request refused (at the limit)", |b| {
        b.iter(|| black_box(full.try_request()).is_err())
    });
    group.finish();
}

criterion_group!(benches, bench_pick, bench_outlier, bench_breaker);
criterion_main!(benches);
