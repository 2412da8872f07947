//! The VirtualService route matcher per request: `CompiledRoutes::http_route` over a host
//! with ten HTTP rules (header exact/prefix/regex, uri prefix/regex/exact, method,
//! authority, query parameter, a weighted split) when the request matches the first rule,
//! the last one, or none (404), next to a host without VirtualService and one with a
//! single rule; then `HttpRoutePlan::pick` for one destination and for a weighted split.
//!
//! `cargo bench -p weft-waypoint --bench route`. The routes are compiled once, as the
//! waypoint does per (configuration version, host).
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use weft_config::api::networking::VirtualService;
use weft_config::registry::model::HostRoutes;
use weft_config::translate::hosts::MeshSettings;
use weft_waypoint::route::{CompiledRoutes, RequestFacts, Source};

const SERVICE: &str = "reviews.bookinfo.svc.cluster.local";

/// Ten rules, none of them a catch-all; each sends to its own subset except the last,
/// a 50/30/20 split for `x-canary: true`.
const TEN_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v1}
  - name: api-v2
    match:
    - uri: {prefix: /api/v2/}
    route:
    - destination: {host: reviews, subset: v2}
  - name: comments
    match:
    - uri: {regex: '/reviews/\d+/comments'}
    route:
    - destination: {host: reviews, subset: v3}
  - name: debug
    match:
    - queryParams:
        debug: {exact: "1"}
    route:
    - destination: {host: reviews, subset: debug}
  - name: tenant
    match:
    - headers:
        x-tenant: {prefix: acme-}
    route:
    - destination: {host: reviews, subset: tenant}
  - name: writer
    match:
    - method: {exact: POST}
      uri: {exact: /reviews}
    route:
    - destination: {host: reviews, subset: writer}
  - name: firefox
    match:
    - headers:
        user-agent: {regex: '.*Firefox.*'}
    route:
    - destination: {host: reviews, subset: firefox}
  - name: internal
    match:
    - authority: {exact: reviews.internal}
    route:
    - destination: {host: reviews, subset: internal}
  - name: tester
    match:
    - uri: {prefix: /reviews/}
      headers:
        cookie: {regex: '^(.*?;)?(user=tester)(;.*)?$'}
    route:
    - destination: {host: reviews, subset: tester}
  - name: canary
    match:
    - headers:
        x-canary: {exact: "true"}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 30
    - destination: {host: reviews, subset: v3}
      weight: 20
"#;

const ONE_RULE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v1}
"#;

fn compile(yaml: Option<&str>) -> CompiledRoutes {
    let Some(yaml) = yaml else {
        return CompiledRoutes::default_for(SERVICE);
    };
    let vs: VirtualService = serde_yaml::from_str(yaml).expect("VirtualService");
    CompiledRoutes::compile(
        &HostRoutes {
            virtual_services: vec![Arc::new(vs)],
            gateway_routes: Vec::new(),
            destination_rule: None,
        },
        SERVICE,
        &MeshSettings::default(),
    )
}

struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    source: Source,
}

impl Request {
    /// A browser-like GET with the headers a request usually carries, plus `extra`.
    fn get(uri: &str, extra: &[(&str, &str)]) -> Self {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
            ),
            ("accept", "application/json"),
            ("cookie", "session=4f1c2a; theme=dark"),
            ("x-request-id", "5b0b7f4e-9a61-4c1e-8a57-0c6b1d0f9e21"),
        ]
        .iter()
        .chain(extra)
        {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        Self {
            method: Method::GET,
            uri: uri.parse().expect("uri"),
            headers,
            source: Source::default(),
        }
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            uri: &self.uri,
            authority: "reviews:9080",
            headers: &self.headers,
            port: 9080,
            source: &self.source,
            auth: None,
        }
    }
}

/// The subset a request is routed to with roll 0, or "404".
fn subset(routes: &CompiledRoutes, request: &Request) -> String {
    routes
        .http_route(&request.facts())
        .map_or("404".into(), |plan| {
            let destination = plan.pick(0).expect("destination");
            destination
                .subset
                .clone()
                .unwrap_or_else(|| destination.host.clone())
        })
}

fn bench(c: &mut Criterion) {
    let default = compile(None);
    let one = compile(Some(ONE_RULE));
    let ten = compile(Some(TEN_RULES));

    let jason = Request::get("/reviews/0", &[("end-user", "jason")]);
    let canary = Request::get("/reviews/0", &[("x-canary", "true")]);
    let plain = Request::get("/reviews/0", &[]);
    // What each case measures is what it claims to.
    assert_eq!(subset(&default, &plain), SERVICE);
    assert_eq!(subset(&one, &jason), "v1");
    assert_eq!(subset(&ten, &jason), "v1");
    assert_eq!(subset(&ten, &canary), "v1");
    assert_eq!(
        ten.http_route(&canary.facts()).and_then(|p| p.name()),
        Some("canary")
    );
    assert_eq!(subset(&ten, &plain), "404");

    let mut group = c.benchmark_group("route/http_route");
    let cases: [(&str, &CompiledRoutes, &Request); 5] = [
        ("no VirtualService (default route)", &default, &plain),
        ("1 rule, matches", &one, &jason),
        ("10 rules, 1st matches", &ten, &jason),
        ("10 rules, 10th matches", &ten, &canary),
        ("10 rules, none matches (404)", &ten, &plain),
    ];
    for (name, routes, request) in cases {
        let facts = request.facts();
        group.bench_function(name, |b| {
            b.iter(|| black_box(routes).http_route(black_box(&facts)).is_some())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("route/pick");
    let single = ten.http_route(&jason.facts()).expect("route");
    let split = ten.http_route(&canary.facts()).expect("route");
    for (name, plan) in [
        ("1 destination", single),
        ("3 weighted destinations", split),
    ] {
        let mut roll = 0u32;
        group.bench_function(name, |b| {
            b.iter(|| {
                roll = roll.wrapping_add(0x9E37_79B9);
                black_box(plan).pick(black_box(roll)).map(|d| d.weight)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
