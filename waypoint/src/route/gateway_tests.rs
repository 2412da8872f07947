//! Whole HTTPRoutes and GRPCRoutes, written as users write them, through compile and
//! route; and which of them and a host's VirtualServices a waypoint applies.
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use weft_config::api::gateway_routes::{GrpcRoute, HttpRoute};
use weft_config::api::networking::VirtualService;
use weft_config::registry::bound_route::{
    BoundRoute, GatewayRoute, RefAt, RefIssue, ResolvedRef, RouteBackends,
};
use weft_config::registry::model::HostRoutes;
use weft_config::translate::hosts::MeshSettings;

use super::*;

const SERVICE: &str = "reviews.shop.svc.cluster.local";

/// Every reference resolved to its Service in the route's namespace, except those listed.
fn bound(route: GatewayRoute, port: Option<u16>, unresolved: &[RefAt]) -> Arc<BoundRoute> {
    let namespace = route.namespace().to_string();
    let refs = route
        .references()
        .into_iter()
        .map(|(at, reference)| {
            let resolved = if unresolved.contains(&at) {
                Err(RefIssue {
                    reason: "BackendNotFound",
                    message: "not found".into(),
                })
            } else {
                Ok(ResolvedRef {
                    host: MeshSettings::default().service_host(
                        &reference.name,
                        reference.namespace.as_deref().unwrap_or(&namespace),
                    ),
                    port: reference
                        .port
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(0),
                })
            };
            (at, resolved)
        })
        .collect();
    Arc::new(BoundRoute {
        route,
        service_namespace: "shop".into(),
        port,
        backends: Arc::new(RouteBackends { refs }),
    })
}

fn http(yaml: &str) -> GatewayRoute {
    GatewayRoute::Http(Arc::new(
        serde_yaml::from_str::<HttpRoute>(yaml).expect("HTTPRoute"),
    ))
}

fn grpc(yaml: &str) -> GatewayRoute {
    GatewayRoute::Grpc(Arc::new(
        serde_yaml::from_str::<GrpcRoute>(yaml).expect("GRPCRoute"),
    ))
}

/// An HTTPRoute `name` in `namespace`, created at `created` (seconds), with `rules`.
fn route_yaml(namespace: &str, name: &str, created: u32, rules: &str) -> String {
    let rules: String = rules.lines().map(|line| format!("  {line}\n")).collect();
    format!(
        "metadata:\n  name: {name}\n  namespace: {namespace}\n  creationTimestamp: \"2026-01-01T00:{:02}:{:02}Z\"\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews, namespace: shop}}]\n  rules:\n{rules}",
        created / 60,
        created % 60
    )
}

fn compile_at(
    bound: Vec<Arc<BoundRoute>>,
    virtual_services: &[&str],
    waypoint_namespace: &str,
) -> CompiledRoutes {
    CompiledRoutes::compile_at(
        &HostRoutes {
            virtual_services: virtual_services
                .iter()
                .map(|yaml| Arc::new(serde_yaml::from_str::<VirtualService>(yaml).expect("VS")))
                .collect(),
            gateway_routes: bound,
            destination_rule: None,
        },
        SERVICE,
        waypoint_namespace,
        &MeshSettings::default(),
    )
}

fn compile(bound: Vec<Arc<BoundRoute>>) -> CompiledRoutes {
    compile_at(bound, &[], "shop")
}

fn one(rules: &str) -> CompiledRoutes {
    compile(vec![bound(
        http(&route_yaml("shop", "r", 0, rules)),
        None,
        &[],
    )])
}

struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    port: u16,
    source: Source,
}

impl Request {
    fn get(uri: &str) -> Self {
        Self {
            method: Method::GET,
            uri: uri.parse().expect("uri"),
            headers: HeaderMap::new(),
            port: 9080,
            source: Source::default(),
        }
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            uri: &self.uri,
            authority: "reviews:9080",
            headers: &self.headers,
            port: self.port,
            source: &self.source,
            auth: None,
        }
    }
}

/// The name of the rule a request takes (`None`: no route, a 404).
fn routed(routes: &CompiledRoutes, request: &Request) -> Option<String> {
    routes
        .http_route(&request.facts())
        .map(|plan| plan.name().unwrap_or_default().to_string())
}

/// Where the plan sends a request, as `host:port`, for a roll.
fn target(plan: &HttpRoutePlan, roll: u32) -> String {
    let destination = plan.pick(roll).expect("a destination");
    if destination.unresolved {
        return "500".into();
    }
    format!("{}:{}", destination.host, destination.port.unwrap_or(0))
}

#[test]
fn weights_split_as_written_and_default_to_one() {
    let routes = one(
        "- backendRefs:\n  - {name: reviews-v1, port: 9080, weight: 90}\n  - {name: reviews-v2, port: 9080, weight: 10}",
    );
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("a route");
    let mut counts = std::collections::BTreeMap::new();
    for roll in 0..1000 {
        *counts.entry(target(plan, roll)).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        std::collections::BTreeMap::from([
            ("reviews-v1.shop.svc.cluster.local:9080".to_string(), 900),
            ("reviews-v2.shop.svc.cluster.local:9080".to_string(), 100),
        ])
    );
    // No weights: 1 each; a weight of 0 takes nothing.
    let routes = one(
        "- backendRefs:\n  - {name: a, port: 80}\n  - {name: b, port: 80}\n  - {name: c, port: 80, weight: 0}",
    );
    let plan = routes.http_route(&request.facts()).expect("a route");
    assert_eq!(target(plan, 0), "a.shop.svc.cluster.local:80");
    assert_eq!(target(plan, 1), "b.shop.svc.cluster.local:80");
    assert_eq!(target(plan, 2), "a.shop.svc.cluster.local:80");
}

#[test]
fn no_weight_at_all_and_unusable_backends_answer_500() {
    let request = Request::get("/");
    for rules in [
        "- backendRefs: [{name: a, port: 80, weight: 0}]",
        "- matches: [{path: {value: /}}]",
    ] {
        let routes = one(rules);
        let plan = routes.http_route(&request.facts()).expect("a route");
        assert!(
            matches!(
                plan.action(),
                RouteAction::DirectResponse { status, .. } if *status == StatusCode::INTERNAL_SERVER_ERROR
            ),
            "{rules}: {:?}",
            plan.action()
        );
    }
    let unusable = RefAt::Backend {
        rule: 0,
        backend: 1,
    };
    let routes = compile(vec![bound(
        http(&route_yaml(
            "shop",
            "r",
            0,
            "- backendRefs:\n  - {name: a, port: 80, weight: 3}\n  - {name: gone, port: 80, weight: 1}",
        )),
        None,
        &[unusable],
    )]);
    let plan = routes.http_route(&request.facts()).expect("a route");
    let answers: Vec<String> = (0..4).map(|roll| target(plan, roll)).collect();
    assert_eq!(
        answers,
        [
            "a.shop.svc.cluster.local:80",
            "a.shop.svc.cluster.local:80",
            "a.shop.svc.cluster.local:80",
            "500"
        ]
    );
}

#[test]
fn precedence_is_the_gateway_apis_across_rules_and_routes() {
    let older = route_yaml(
        "shop",
        "older",
        0,
        r#"- name: prefix-short
  matches: [{path: {type: PathPrefix, value: /a}}]
  backendRefs: [{name: s, port: 80}]
- name: prefix-long-query
  matches: [{path: {type: PathPrefix, value: /a/b}, queryParams: [{name: q, value: "1"}]}]
  backendRefs: [{name: s, port: 80}]
- name: exact
  matches: [{path: {type: Exact, value: /a/b}}]
  backendRefs: [{name: s, port: 80}]
"#,
    );
    let newer = route_yaml(
        "shop",
        "newer",
        5,
        r#"- name: prefix-long-header
  matches: [{path: {type: PathPrefix, value: /a/b/}, headers: [{name: x, value: "1"}]}]
  backendRefs: [{name: s, port: 80}]
- name: prefix-long-method
  matches: [{path: {type: PathPrefix, value: /a/b}, method: POST}]
  backendRefs: [{name: s, port: 80}]
- name: prefix-long-older-tie
  matches: [{path: {type: PathPrefix, value: /a/b}, queryParams: [{name: q, value: "1"}]}]
  backendRefs: [{name: s, port: 80}]
"#,
    );
    // Given newest first: the order of the routes is their age, not the list's.
    let routes = compile(vec![
        bound(http(&older), None, &[]),
        bound(http(&newer), None, &[]),
    ]);
    let name = |r: &Request| routed(&routes, r);
    assert_eq!(name(&Request::get("/a/b")).as_deref(), Some("exact"));
    assert_eq!(
        name(&Request::get("/a/b/c").method(Method::POST).header("x", "1")).as_deref(),
        Some("prefix-long-method"),
        "a method match outranks header matches"
    );
    assert_eq!(
        name(&Request::get("/a/b/c?q=1").header("x", "1")).as_deref(),
        Some("prefix-long-header"),
        "a header match outranks a query match"
    );
    assert_eq!(
        name(&Request::get("/a/b/c?q=1")).as_deref(),
        Some("prefix-long-query"),
        "the older route wins a tie"
    );
    assert_eq!(
        name(&Request::get("/a/bc")).as_deref(),
        Some("prefix-short"),
        "whole segments"
    );
    assert_eq!(name(&Request::get("/ab")), None, "no route: 404");
}

#[test]
fn matches_are_exact_regex_header_query_and_method() {
    let routes = one(r#"- name: matched
  matches:
  - path: {type: RegularExpression, value: "/v[0-9]+/.*"}
    headers: [{name: End-User, value: jason}, {type: RegularExpression, name: x-tier, value: "gold|silver"}]
    queryParams: [{name: debug, value: "1"}]
    method: GET
  backendRefs: [{name: s, port: 80}]
"#);
    let good = || {
        Request::get("/v2/books?debug=1")
            .header("end-user", "jason")
            .header("x-tier", "gold")
    };
    assert_eq!(routed(&routes, &good()).as_deref(), Some("matched"));
    assert_eq!(routed(&routes, &good().method(Method::POST)), None);
    assert_eq!(
        routed(
            &routes,
            &Request::get("/v2/books?debug=1")
                .header("end-user", "jason")
                .header("x-tier", "golden")
        ),
        None,
        "regexes match whole values"
    );
    assert_eq!(
        routed(
            &routes,
            &Request::get("/v2/books")
                .header("end-user", "jason")
                .header("x-tier", "gold")
        ),
        None
    );
    assert_eq!(
        routed(
            &routes,
            &Request::get("/x/v2/books?debug=1")
                .header("end-user", "jason")
                .header("x-tier", "gold")
        ),
        None
    );
}

#[test]
fn rewrites_replace_the_matched_prefix_or_the_whole_path() {
    let rewritten = |rules: &str, uri: &str| {
        let routes = one(rules);
        let request = Request::get(uri);
        let plan = routes.http_route(&request.facts()).expect("a route");
        let destination = plan.pick(0);
        let rewrite = plan.rewrite(&request.facts(), destination);
        (
            rewrite.path_and_query,
            rewrite
                .authority
                .map(|a| a.to_str().unwrap_or_default().to_string()),
        )
    };
    let prefix = |to: &str| {
        format!(
            "- matches: [{{path: {{type: PathPrefix, value: /api/}}}}]\n  filters: [{{type: URLRewrite, urlRewrite: {{hostname: books.example.com, path: {{type: ReplacePrefixMatch, replacePrefixMatch: \"{to}\"}}}}}}]\n  backendRefs: [{{name: s, port: 80}}]"
        )
    };
    assert_eq!(
        rewritten(&prefix("/v2"), "/api/books?x=1"),
        (
            Some("/v2/books?x=1".into()),
            Some("books.example.com".into())
        )
    );
    assert_eq!(rewritten(&prefix("/v2/"), "/api").0.as_deref(), Some("/v2"));
    assert_eq!(
        rewritten(&prefix("/"), "/api/books?x=1").0.as_deref(),
        Some("/books?x=1")
    );
    assert_eq!(rewritten(&prefix("/"), "/api").0.as_deref(), Some("/"));
    let full = "- filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /status/$1}}}]\n  backendRefs: [{name: s, port: 80}]";
    assert_eq!(
        rewritten(full, "/anything/here?x=1").0.as_deref(),
        Some("/status/$1?x=1"),
        "taken literally, the query kept"
    );
}

#[test]
fn redirects_default_to_302_and_the_requests_port() {
    let location = |filter: &str, uri: &str| {
        let routes = one(&format!(
            "- matches: [{{path: {{type: PathPrefix, value: /old}}}}]\n  filters: [{{type: RequestRedirect, requestRedirect: {filter}}}]"
        ));
        let request = Request::get(uri);
        let plan = routes.http_route(&request.facts()).expect("a route");
        let (status, location) = plan
            .redirect_location(&request.facts())
            .expect("a redirect");
        (
            status.as_u16(),
            location.to_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(
        location("{hostname: example.com}", "/old/x"),
        (302, "http://example.com:9080/old/x".into())
    );
    assert_eq!(
        location("{scheme: https, statusCode: 301}", "/old/x"),
        (301, "https://reviews:9080/old/x".into()),
        "with a scheme and no port, Envoy keeps the request's host"
    );
    assert_eq!(
        location(
            "{port: 8080, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}",
            "/old/x?q=1"
        ),
        (302, "http://reviews:8080/new/x?q=1".into())
    );
    // pilot leaves out the scheme's default port, so Envoy keeps the request's host.
    assert_eq!(
        location("{port: 80}", "/old/x"),
        (302, "http://reviews:9080/old/x".into())
    );
    assert_eq!(
        location(
            "{path: {type: ReplaceFullPath, replaceFullPath: /moved}}",
            "/old/x?q=1"
        ),
        (302, "http://reviews:9080/moved?q=1".into())
    );
}

#[test]
fn header_modifiers_apply_to_requests_and_responses() {
    let routes = one(r#"- filters:
  - type: RequestHeaderModifier
    requestHeaderModifier:
      set: [{name: X-Set, value: "1"}]
      add: [{name: x-add, value: "2"}, {name: X-ADD, value: ignored}]
      remove: [x-gone]
  - type: ResponseHeaderModifier
    responseHeaderModifier: {set: [{name: x-served-by, value: weft}]}
  backendRefs:
  - name: s
    port: 80
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-backend, value: s}]}}]
"#);
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("a route");
    let destination = plan.pick(0).expect("destination");
    let mut headers = HeaderMap::new();
    headers.insert("x-set", HeaderValue::from_static("0"));
    headers.insert("x-add", HeaderValue::from_static("1"));
    headers.insert("x-gone", HeaderValue::from_static("bye"));
    plan.apply_request_headers(destination, &mut headers, &HeaderVars::for_tests());
    assert_eq!(headers["x-set"], "1");
    assert_eq!(
        headers.get_all("x-add").iter().collect::<Vec<_>>(),
        ["1", "2"],
        "add appends; a repeated name is ignored"
    );
    assert!(headers.get("x-gone").is_none());
    assert_eq!(headers["x-backend"], "s");
    let mut response = HeaderMap::new();
    plan.apply_response_headers(Some(destination), &mut response, &HeaderVars::for_tests());
    assert_eq!(response["x-served-by"], "weft");
}

#[test]
fn timeouts_and_retries_are_istios() {
    let plan_of = |rules: &str| {
        let routes = one(rules);
        let request = Request::get("/");
        let plan = routes
            .http_route(&request.facts())
            .expect("a route")
            .clone();
        (plan.timeout(), plan.retry().clone())
    };
    let (timeout, retry) =
        plan_of("- backendRefs: [{name: s, port: 80}]\n  timeouts: {request: 10s}");
    assert_eq!(timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        retry,
        RetryPolicy::istio_default(),
        "Istio's default retries"
    );
    let (timeout, _) = plan_of(
        "- backendRefs: [{name: s, port: 80}]\n  timeouts: {request: 10s, backendRequest: 2s}",
    );
    assert_eq!(
        timeout,
        Some(Duration::from_secs(2)),
        "backendRequest wins without retry"
    );
    let (timeout, retry) = plan_of(
        "- backendRefs: [{name: s, port: 80}]\n  timeouts: {request: 10s, backendRequest: 2s}\n  retry: {attempts: 3, codes: [503]}",
    );
    assert_eq!(timeout, Some(Duration::from_secs(10)));
    assert_eq!(retry.attempts, 3);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(2)));
    let (_, retry) = plan_of("- backendRefs: [{name: s, port: 80}]\n  retry: {attempts: 0}");
    assert_eq!(retry.attempts, 0);
}

#[test]
fn mirrors_take_their_fraction_and_unusable_ones_are_dropped() {
    let yaml = route_yaml(
        "shop",
        "r",
        0,
        r#"- filters:
  - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 4}}}
  - {type: RequestMirror, requestMirror: {backendRef: {name: gone, port: 80}}}
  backendRefs: [{name: s, port: 80}]
"#,
    );
    let routes = compile(vec![bound(
        http(&yaml),
        None,
        &[RefAt::Mirror { rule: 0, filter: 1 }],
    )]);
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("a route");
    assert_eq!(plan.mirrors().len(), 1);
    assert_eq!(
        plan.mirrors()[0].destination.host,
        "shadow.shop.svc.cluster.local"
    );
    assert_eq!(plan.mirrors()[0].percentage, 25.0);
}

#[test]
fn filters_weft_cannot_apply_make_the_rule_answer_500() {
    let routes = one(
        "- filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Auth, name: a}}]\n  backendRefs: [{name: s, port: 80}]",
    );
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("a route");
    assert!(matches!(
        plan.action(),
        RouteAction::DirectResponse { status, .. } if *status == StatusCode::INTERNAL_SERVER_ERROR
    ));
}

#[test]
fn a_port_of_the_parent_ref_limits_the_routes_to_it() {
    let routes = compile(vec![bound(
        http(&route_yaml(
            "shop",
            "r",
            0,
            "- matches: [{path: {type: Exact, value: /only}}]\n  backendRefs: [{name: s, port: 80}]",
        )),
        Some(9080),
        &[],
    )]);
    assert_eq!(
        routed(&routes, &Request::get("/only")).as_deref(),
        Some("shop.r.0")
    );
    assert_eq!(
        routed(&routes, &Request::get("/other")),
        None,
        "404 on its port"
    );
    assert_eq!(
        routed(&routes, &Request::get("/other").port(8080)).as_deref(),
        Some("default"),
        "another port: the Service's default route, as pilot"
    );
}

#[test]
fn grpc_routes_match_service_and_method_paths() {
    let route = grpc(
        r#"
metadata: {name: g, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - name: exact
    matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
    backendRefs: [{name: v2, port: 50051}]
  - name: service
    matches: [{method: {service: helloworld.Greeter}}]
    backendRefs: [{name: v1, port: 50051}]
  - name: method-anywhere
    matches: [{method: {method: Check}, headers: [{name: x-debug, value: "1"}]}]
    backendRefs: [{name: v3, port: 50051}]
  - name: regex
    matches: [{method: {type: RegularExpression, service: "health\\..*"}}]
    backendRefs: [{name: v4, port: 50051}]
  - name: rest
    backendRefs: [{name: v5, port: 50051}]
"#,
    );
    let routes = compile(vec![bound(route, None, &[])]);
    let post = |path: &str| Request::get(path).method(Method::POST);
    let name = |r: &Request| routed(&routes, r);
    assert_eq!(
        name(&post("/helloworld.Greeter/SayHello")).as_deref(),
        Some("exact")
    );
    assert_eq!(
        name(&post("/helloworld.Greeter/SayGoodbye")).as_deref(),
        Some("service")
    );
    assert_eq!(
        name(&post("/helloworld.GreeterX/SayHello")).as_deref(),
        Some("rest")
    );
    assert_eq!(
        name(&post("/any.Service/Check").header("x-debug", "1")).as_deref(),
        Some("method-anywhere")
    );
    assert_eq!(
        name(&post("/health.v1.Health/Watch")).as_deref(),
        Some("regex")
    );
    assert_eq!(name(&post("/other.Service/Check")).as_deref(), Some("rest"));
}

const VS_OLD: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: shop, creationTimestamp: "2026-01-01T00:00:10Z"}
spec:
  hosts: [reviews]
  http:
  - name: from-vs
    route: [{destination: {host: reviews}}]
"#;

#[test]
fn the_waypoints_namespace_routes_come_first_then_the_oldest() {
    let route_in = |namespace: &str, created: u32| {
        bound(
            http(&route_yaml(
                namespace,
                "r",
                created,
                "- name: from-route\n  backendRefs: [{name: s, port: 80}]",
            )),
            None,
            &[],
        )
    };
    let request = Request::get("/");
    // The waypoint in the Service's namespace: its HTTPRoute wins though newer.
    let routes = compile_at(vec![route_in("shop", 60)], &[VS_OLD], "shop");
    assert_eq!(routed(&routes, &request).as_deref(), Some("from-route"));
    // A waypoint elsewhere: the oldest of the VirtualService and the Service's routes.
    let routes = compile_at(vec![route_in("shop", 60)], &[VS_OLD], "infra");
    assert_eq!(routed(&routes, &request).as_deref(), Some("from-vs"));
    let routes = compile_at(vec![route_in("shop", 5)], &[VS_OLD], "infra");
    assert_eq!(routed(&routes, &request).as_deref(), Some("from-route"));
    // Routes of a third namespace are not the waypoint's to apply.
    let routes = compile_at(vec![route_in("third", 0)], &[], "infra");
    assert_eq!(routed(&routes, &request).as_deref(), Some("default"));
    // A VirtualService without HTTP rules does not count.
    let tcp_only = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  hosts: [reviews]
  tcp: [{route: [{destination: {host: reviews}}]}]
"#;
    let routes = compile_at(Vec::new(), &[tcp_only, VS_OLD], "shop");
    assert_eq!(routed(&routes, &request).as_deref(), Some("from-vs"));
}
