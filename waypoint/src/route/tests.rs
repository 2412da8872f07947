//! Whole VirtualServices, written as users write them, through compile and route.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use weft_config::api::networking::VirtualService;
use weft_config::registry::model::HostRoutes;
use weft_config::translate::hosts::MeshSettings;

use super::*;

const SERVICE: &str = "reviews.bookinfo.svc.cluster.local";

fn compile(yamls: &[&str]) -> CompiledRoutes {
    let virtual_services = yamls
        .iter()
        .map(|yaml| Arc::new(serde_yaml::from_str::<VirtualService>(yaml).expect("VirtualService")))
        .collect();
    CompiledRoutes::compile(
        &HostRoutes {
            virtual_services,
            gateway_routes: Vec::new(),
            destination_rule: None,
        },
        SERVICE,
        &MeshSettings::default(),
    )
}

/// `spec` under a VirtualService header for `reviews` in `bookinfo`.
fn vs(spec: &str) -> String {
    let spec: String = spec.lines().map(|line| format!("  {line}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: bookinfo\nspec:\n  hosts: [reviews]\n{spec}"
    )
}

fn routes(spec: &str) -> CompiledRoutes {
    compile(&[&vs(spec)])
}

struct Request {
    method: Method,
    uri: Uri,
    authority: String,
    headers: HeaderMap,
    port: u16,
    source: Source,
    auth: Option<weft_config::authn::Authenticated>,
}

impl Request {
    fn get(uri: &str) -> Self {
        Self {
            method: Method::GET,
            uri: uri.parse().expect("uri"),
            authority: "reviews:9080".into(),
            headers: HeaderMap::new(),
            port: 9080,
            source: Source::default(),
            auth: None,
        }
    }

    /// A verified JWT with these claims.
    fn claims(mut self, claims: serde_json::Value) -> Self {
        let serde_json::Value::Object(claims) = claims else {
            panic!("claims are an object");
        };
        self.auth = Some(weft_config::authn::Authenticated {
            principal: None,
            audiences: Vec::new(),
            presenter: None,
            claims,
            payload_base64url: String::new(),
        });
        self
    }

    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn from(mut self, namespace: &str, labels: &[(&str, &str)]) -> Self {
        self.source = Source {
            principal: Some(format!("spiffe://cluster.local/ns/{namespace}/sa/default")),
            namespace: Some(namespace.into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            uri: &self.uri,
            authority: &self.authority,
            headers: &self.headers,
            port: self.port,
            source: &self.source,
            auth: self.auth.as_ref(),
        }
    }
}

/// The subset (or host, without one) a request is sent to with roll 0; "404" when no rule
/// matches.
fn target(routes: &CompiledRoutes, request: &Request) -> String {
    match routes.http_route(&request.facts()) {
        None => "404".into(),
        Some(plan) => match plan.pick(0) {
            Some(d) => d.subset.clone().unwrap_or_else(|| d.host.clone()),
            None => "no destination".into(),
        },
    }
}

#[test]
fn end_user_jason_goes_to_v2_and_everyone_else_to_v1() {
    let routes = routes(
        "http:\n- match:\n  - headers:\n      end-user:\n        exact: jason\n  route:\n  - destination:\n      host: reviews\n      subset: v2\n- route:\n  - destination:\n      host: reviews\n      subset: v1\n",
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/reviews/0").header("end-user", "jason")
        ),
        "v2"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/reviews/0").header("end-user", "Jason")
        ),
        "v1"
    );
    assert_eq!(target(&routes, &Request::get("/reviews/0")), "v1");
    let plan = routes
        .http_route(&Request::get("/").header("end-user", "jason").facts())
        .expect("route");
    let destination = plan.pick(12345).expect("destination");
    assert_eq!(destination.host, SERVICE);
    assert_eq!(destination.port, None);
}

#[test]
fn an_80_20_split_is_exact_over_a_uniform_sweep() {
    let routes = routes(
        "http:\n- route:\n  - destination: {host: reviews, subset: v1}\n    weight: 80\n  - destination: {host: reviews, subset: v2}\n    weight: 20\n  - destination: {host: reviews, subset: v3}\n    weight: 0\n",
    );
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("route");
    let RouteAction::Forward(destinations) = plan.action() else {
        panic!("forward expected");
    };
    assert_eq!(destinations.len(), 2, "zero weights are left out");
    let (mut v1, mut v2) = (0, 0);
    for roll in 0..10_000u32 {
        match plan.pick(roll).and_then(|d| d.subset.as_deref()) {
            Some("v1") => v1 += 1,
            Some("v2") => v2 += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((v1, v2), (8_000, 2_000));
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix_and_sets_the_authority() {
    let routes = routes(
        "http:\n- match:\n  - uri: {prefix: /ratings}\n  - uri: {exact: /old}\n  rewrite:\n    uri: /v1/bookRatings\n    authority: ratings.prod\n  route:\n  - destination: {host: ratings.prod.svc.cluster.local, subset: v1}\n",
    );
    let rewrite = |uri: &str| {
        let request = Request::get(uri);
        let plan = routes.http_route(&request.facts()).expect("route");
        let destination = plan.pick(0).expect("destination");
        assert_eq!(destination.host, "ratings.prod.svc.cluster.local");
        plan.rewrite(&request.facts(), Some(destination))
    };
    let rewritten = rewrite("/ratings/5?detail=1");
    assert_eq!(
        rewritten.path_and_query.as_deref(),
        Some("/v1/bookRatings/5?detail=1")
    );
    assert_eq!(
        rewritten.authority,
        Some(HeaderValue::from_static("ratings.prod"))
    );
    // An exact match is replaced whole.
    assert_eq!(
        rewrite("/old?q").path_and_query.as_deref(),
        Some("/v1/bookRatings?q")
    );
    assert_eq!(target(&routes, &Request::get("/other")), "404");
}

#[test]
fn regex_uris_and_without_headers() {
    let routes = routes(
        "http:\n- match:\n  - uri:\n      regex: '/reviews/\\d+'\n    withoutHeaders:\n      x-canary: {exact: 'true'}\n      x-debug: {}\n  route:\n  - destination: {host: reviews, subset: stable}\n- route:\n  - destination: {host: reviews, subset: other}\n",
    );
    assert_eq!(target(&routes, &Request::get("/reviews/42")), "stable");
    // Full match: no trailing segment, and the query is not part of the path.
    assert_eq!(target(&routes, &Request::get("/reviews/42/x")), "other");
    assert_eq!(
        target(&routes, &Request::get("/reviews/42?page=2")),
        "stable"
    );
    assert_eq!(target(&routes, &Request::get("/api/reviews/42")), "other");
    // withoutHeaders: a matching value or a present header (for `{}`) excludes.
    assert_eq!(
        target(
            &routes,
            &Request::get("/reviews/1").header("x-canary", "true")
        ),
        "other"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/reviews/1").header("x-canary", "false")
        ),
        "stable"
    );
    assert_eq!(
        target(&routes, &Request::get("/reviews/1").header("x-debug", "")),
        "other"
    );
}

#[test]
fn header_conditions() {
    let routes = routes(
        "http:\n- match:\n  - headers:\n      x-present: {}\n      x-prefix: {prefix: abc}\n      x-regex: {regex: '(?i)ya?ml'}\n  route:\n  - destination: {host: reviews, subset: all}\n- route:\n  - destination: {host: reviews, subset: fallback}\n",
    );
    let full = || {
        Request::get("/")
            .header("x-present", "")
            .header("x-prefix", "abcdef")
            .header("x-regex", "YAML")
    };
    assert_eq!(target(&routes, &full()), "all");
    assert_eq!(
        target(&routes, &full().header("x-regex", "json")),
        "fallback",
        "values are joined with ','"
    );
    let mut missing = full();
    missing.headers.remove("x-present");
    assert_eq!(target(&routes, &missing), "fallback");
    let mut wrong_prefix = full();
    wrong_prefix
        .headers
        .insert("x-prefix", HeaderValue::from_static("xabc"));
    assert_eq!(target(&routes, &wrong_prefix), "fallback");
}

#[test]
fn ignore_uri_case_applies_to_exact_and_prefix_only() {
    let routes = routes(
        "http:\n- match:\n  - uri: {prefix: /Ratings/V2/}\n    ignoreUriCase: true\n  - uri: {exact: /Health}\n    ignoreUriCase: true\n  - uri: {regex: '/Admin'}\n    ignoreUriCase: true\n  route:\n  - destination: {host: reviews, subset: matched}\n",
    );
    assert_eq!(target(&routes, &Request::get("/ratings/v2/1")), "matched");
    assert_eq!(target(&routes, &Request::get("/RATINGS/V2/")), "matched");
    assert_eq!(target(&routes, &Request::get("/health")), "matched");
    assert_eq!(target(&routes, &Request::get("/healthz")), "404");
    assert_eq!(target(&routes, &Request::get("/Admin")), "matched");
    assert_eq!(target(&routes, &Request::get("/admin")), "404");
    let case_sensitive = self::routes(
        "http:\n- match:\n  - uri: {prefix: /Ratings}\n  route:\n  - destination: {host: reviews}\n",
    );
    assert_eq!(target(&case_sensitive, &Request::get("/ratings")), "404");
}

#[test]
fn query_params() {
    let routes = routes(
        "http:\n- match:\n  - queryParams:\n      key: {exact: 'true'}\n  route:\n  - destination: {host: reviews, subset: exact}\n- match:\n  - queryParams:\n      flag: {exact: ''}\n  route:\n  - destination: {host: reviews, subset: empty}\n- match:\n  - queryParams:\n      id: {regex: '\\d+'}\n      v: {}\n  route:\n  - destination: {host: reviews, subset: regex}\n- match:\n  - queryParams:\n      name: {prefix: ab}\n  route:\n  - destination: {host: reviews, subset: prefix}\n",
    );
    assert_eq!(target(&routes, &Request::get("/?key=true")), "exact");
    assert_eq!(target(&routes, &Request::get("/?key=truer")), "404");
    assert_eq!(target(&routes, &Request::get("/?a=1&flag&b=2")), "empty");
    assert_eq!(target(&routes, &Request::get("/?id=123&v")), "regex");
    assert_eq!(target(&routes, &Request::get("/?id=a123&v")), "404");
    assert_eq!(target(&routes, &Request::get("/?id=123")), "404");
    assert_eq!(target(&routes, &Request::get("/?name=abx")), "prefix");
    assert_eq!(target(&routes, &Request::get("/")), "404");
}

#[test]
fn method_authority_scheme_and_port() {
    let routes = routes(
        "http:\n- match:\n  - method: {exact: POST}\n    authority: {prefix: reviews}\n    scheme: {exact: http}\n    port: 9080\n  route:\n  - destination: {host: reviews, subset: post}\n- match:\n  - port: 9090\n  route:\n  - destination: {host: reviews, subset: admin-port}\n",
    );
    assert_eq!(
        target(&routes, &Request::get("/").method(Method::POST)),
        "post"
    );
    assert_eq!(target(&routes, &Request::get("/")), "404");
    let mut other_host = Request::get("/").method(Method::POST);
    other_host.authority = "ratings".into();
    assert_eq!(target(&routes, &other_host), "404");
    // On 9090 only the second rule exists.
    assert_eq!(
        target(&routes, &Request::get("/").method(Method::POST).port(9090)),
        "admin-port"
    );
    // On a port no block names, the VirtualService yields no routes: the default route.
    assert_eq!(target(&routes, &Request::get("/").port(7000)), SERVICE);
}

#[test]
fn source_labels_namespaces_and_gateways_select_blocks() {
    let routes = routes(
        "http:\n- match:\n  - sourceLabels: {app: productpage}\n    sourceNamespace: bookinfo\n  route:\n  - destination: {host: reviews, subset: from-productpage}\n- match:\n  - gateways: [bookinfo-gateway]\n  route:\n  - destination: {host: reviews, subset: ingress-only}\n- match:\n  - gateways: [mesh]\n    sourceLabels: {app: nobody}\n    headers: {x-mesh: {}}\n  route:\n  - destination: {host: reviews, subset: mesh}\n",
    );
    let productpage =
        || Request::get("/").from("bookinfo", &[("app", "productpage"), ("version", "v1")]);
    assert_eq!(target(&routes, &productpage()), "from-productpage");
    // Same labels from another namespace: the first block does not exist for it, the
    // gateway block never does in the mesh, and the mesh block ignores sourceLabels.
    let elsewhere = || Request::get("/").from("other", &[("app", "productpage")]);
    assert_eq!(target(&routes, &elsewhere().header("x-mesh", "1")), "mesh");
    assert_eq!(target(&routes, &elsewhere()), "404");
}

#[test]
fn without_any_route_for_the_client_the_default_route_serves() {
    let routes = routes(
        "http:\n- match:\n  - sourceLabels: {app: productpage}\n    uri: {prefix: /special}\n  route:\n  - destination: {host: reviews, subset: special}\n",
    );
    let productpage = || Request::get("/").from("bookinfo", &[("app", "productpage")]);
    assert_eq!(target(&routes, &productpage()), "404");
    let other = Request::get("/").from("bookinfo", &[("app", "ratings")]);
    let plan = routes.http_route(&other.facts()).expect("default route");
    assert_eq!(plan.name(), Some("default"));
    assert_eq!(plan.pick(7).map(|d| d.host.as_str()), Some(SERVICE));
    assert_eq!(plan.retry(), &RetryPolicy::istio_default());
    assert_eq!(plan.timeout(), None);
}

#[test]
fn default_routes() {
    let routes = CompiledRoutes::default_for(SERVICE);
    let request = Request::get("/anything?at=all").method(Method::DELETE);
    let plan = routes.http_route(&request.facts()).expect("default route");
    assert_eq!(plan.name(), Some("default"));
    let destination = plan.pick(u32::MAX).expect("destination");
    assert_eq!(
        (
            destination.host.as_str(),
            destination.port,
            destination.weight
        ),
        (SERVICE, None, 100)
    );
    assert_eq!(
        plan.rewrite(&request.facts(), Some(destination)),
        Rewrite::default()
    );
    assert_eq!(plan.retry().attempts, 2);
    assert!(plan.fault().is_none() && plan.cors().is_none() && plan.mirrors().is_empty());
    let tcp = routes.tcp_route(9080, None, &Source::default());
    assert_eq!(tcp.pick(3).map(|d| d.host.as_str()), Some(SERVICE));
    // A VirtualService with only tcp rules leaves HTTP on the default route.
    let tcp_only = self::routes("tcp:\n- route:\n  - destination: {host: reviews, subset: v1}\n");
    assert_eq!(target(&tcp_only, &Request::get("/")), SERVICE);
}

#[test]
fn http_uses_the_oldest_virtual_service_only() {
    let first = vs("http:\n- route:\n  - destination: {host: reviews, subset: first}\n");
    let second = vs("http:\n- route:\n  - destination: {host: reviews, subset: second}\n");
    let routes = compile(&[&first, &second]);
    assert_eq!(target(&routes, &Request::get("/")), "first");
}

#[test]
fn retries_and_timeouts_from_yaml() {
    let routes = routes(
        "http:\n- match:\n  - uri: {prefix: /custom}\n  timeout: 10s\n  retries:\n    attempts: 3\n    perTryTimeout: 2s\n    retryOn: gateway-error,connect-failure,refused-stream\n  route:\n  - destination: {host: reviews}\n- match:\n  - uri: {prefix: /none}\n  retries: {attempts: 0}\n  route:\n  - destination: {host: reviews}\n- route:\n  - destination: {host: reviews}\n",
    );
    let plan_for = |uri: &str| {
        routes
            .http_route(&Request::get(uri).facts())
            .expect("route")
            .clone()
    };
    let custom = plan_for("/custom");
    assert_eq!(custom.timeout(), Some(Duration::from_secs(10)));
    let retry = custom.retry();
    assert_eq!(
        (retry.attempts, retry.per_try_timeout),
        (3, Some(Duration::from_secs(2)))
    );
    let bad_gateway = AttemptOutcome::Response {
        status: StatusCode::BAD_GATEWAY,
        grpc_status: None,
        envoy_ratelimited: false,
    };
    assert!(retry.should_retry(&bad_gateway));
    assert!(retry.should_retry(&AttemptOutcome::ConnectFailure));
    assert!(
        !plan_for("/none")
            .retry()
            .should_retry(&AttemptOutcome::ConnectFailure)
    );
    let default = plan_for("/");
    assert_eq!(default.retry(), &RetryPolicy::istio_default());
    assert!(!default.retry().should_retry(&bad_gateway));
    assert_eq!(default.timeout(), None);
    // gRPC requests bring their own deadline, capped by the route's.
    let grpc = Request::get("/custom")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "3S");
    assert_eq!(
        custom.effective_timeout(&grpc.headers),
        Some(Duration::from_secs(3))
    );
    let slow = Request::get("/")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "1M");
    assert_eq!(
        custom.effective_timeout(&slow.headers),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        default.effective_timeout(&slow.headers),
        Some(Duration::from_secs(60))
    );
    assert_eq!(default.effective_timeout(&Request::get("/").headers), None);
}

#[test]
fn faults_with_and_without_percentages() {
    let routes = routes(
        "http:\n- match:\n  - uri: {prefix: /delayed}\n  fault:\n    delay:\n      percentage: {value: 0.1}\n      fixedDelay: 5s\n  route:\n  - destination: {host: reviews, subset: v1}\n- match:\n  - uri: {prefix: /unset}\n  fault:\n    abort: {httpStatus: 500}\n  route:\n  - destination: {host: reviews}\n- fault:\n    abort:\n      percentage: {value: 100}\n      httpStatus: 503\n  route:\n  - destination: {host: reviews}\n",
    );
    let fault = |uri: &str| {
        routes
            .http_route(&Request::get(uri).facts())
            .expect("route")
            .fault()
            .cloned()
            .expect("fault")
    };
    let delayed = fault("/delayed");
    assert_eq!(
        delayed.decide(0.05, 0.0).delay,
        Some(Duration::from_secs(5))
    );
    assert_eq!(delayed.decide(0.1, 0.0), FaultDecision::default());
    let unset = fault("/unset");
    assert_eq!(unset.decide(0.0, 0.0), FaultDecision::default());
    let always = fault("/");
    assert_eq!(
        always.decide(99.9, 99.9).abort,
        Some(FaultAbort::Http(StatusCode::SERVICE_UNAVAILABLE))
    );
}

#[test]
fn redirects_and_direct_responses() {
    let routes = routes(
        "http:\n- match:\n  - uri: {exact: /v1/getProductRatings}\n  redirect:\n    uri: /v1/bookRatings\n    authority: newratings.default.svc.cluster.local\n  headers:\n    response:\n      set: {x-redirected: 'yes'}\n- match:\n  - uri: {prefix: /down}\n  directResponse:\n    status: 503\n    body: {string: unknown error}\n- match:\n  - uri: {prefix: /binary}\n  directResponse:\n    status: 503\n    body: {bytes: dW5rbm93biBlcnJvcg==}\n",
    );
    let request = Request::get("/v1/getProductRatings?id=7");
    let plan = routes.http_route(&request.facts()).expect("route");
    assert!(plan.pick(0).is_none());
    let (status, location) = plan.redirect_location(&request.facts()).expect("redirect");
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        location,
        "http://newratings.default.svc.cluster.local/v1/bookRatings?id=7"
    );
    let mut response = HeaderMap::new();
    plan.apply_response_headers(None, &mut response, &HeaderVars::for_tests());
    assert_eq!(
        response.get("x-redirected").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    for uri in ["/down", "/binary"] {
        let plan = routes
            .http_route(&Request::get(uri).facts())
            .expect("route");
        let RouteAction::DirectResponse { status, body } = plan.action() else {
            panic!("direct response expected for {uri}");
        };
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.as_deref(), Some(&b"unknown error"[..]));
        assert!(plan.redirect_location(&Request::get(uri).facts()).is_none());
    }
}

#[test]
fn cors_preflight_from_a_virtual_service() {
    let routes = routes(
        "http:\n- route:\n  - destination: {host: reviews, subset: v1}\n  corsPolicy:\n    allowOrigins:\n    - exact: https://example.com\n    allowMethods: [POST, GET]\n    allowCredentials: false\n    allowHeaders: [X-Foo-Bar]\n    maxAge: 24h\n",
    );
    let preflight = Request::get("/ratings")
        .method(Method::OPTIONS)
        .header("origin", "https://example.com")
        .header("access-control-request-method", "POST");
    let plan = routes.http_route(&preflight.facts()).expect("route");
    let cors = plan.cors().expect("cors");
    let response = cors
        .preflight(&preflight.facts())
        .expect("answered locally");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-methods"],
        "POST,GET"
    );
    assert_eq!(response.headers()["access-control-max-age"], "86400");
    let simple = Request::get("/ratings").header("origin", "https://example.com");
    assert!(cors.preflight(&simple.facts()).is_none());
    let mut headers = HeaderMap::new();
    cors.response_headers(simple.headers.get("origin"), &mut headers);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://example.com"
    );
}

#[test]
fn header_operations_of_the_route_and_its_destinations() {
    let routes = routes(
        "http:\n- headers:\n    request:\n      set: {test: 'true'}\n    response:\n      remove: [x-internal]\n  route:\n  - destination: {host: reviews, subset: v2}\n    weight: 25\n    headers:\n      request:\n        set: {':authority': reviews-v2.internal, test: v2}\n  - destination: {host: reviews, subset: v1}\n    weight: 75\n    headers:\n      response:\n        remove: [foo]\n",
    );
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("route");
    let v2 = plan.pick(0).expect("v2");
    let v1 = plan.pick(50).expect("v1");
    assert_eq!(
        (v2.subset.as_deref(), v1.subset.as_deref()),
        (Some("v2"), Some("v1"))
    );
    let mut headers = HeaderMap::new();
    plan.apply_request_headers(v2, &mut headers, &HeaderVars::for_tests());
    // Weighted: the route's parser runs last and its `set` wins.
    assert_eq!(headers["test"], "true");
    assert_eq!(
        plan.rewrite(&request.facts(), Some(v2)).authority,
        Some(HeaderValue::from_static("reviews-v2.internal"))
    );
    assert_eq!(plan.rewrite(&request.facts(), Some(v1)).authority, None);
    let mut response = HeaderMap::new();
    response.insert("foo", HeaderValue::from_static("1"));
    response.insert("x-internal", HeaderValue::from_static("1"));
    plan.apply_response_headers(Some(v2), &mut response.clone(), &HeaderVars::for_tests());
    plan.apply_response_headers(Some(v1), &mut response, &HeaderVars::for_tests());
    assert!(response.is_empty());
}

#[test]
fn mirrors_and_their_percentages() {
    let routes = routes(
        "http:\n- route:\n  - destination: {host: reviews, subset: v1}\n  mirror: {host: reviews, subset: v2}\n  mirrorPercentage: {value: 50}\n  mirrors:\n  - destination: {host: shadow.other.svc.cluster.local}\n  - destination: {host: never}\n    percentage: {value: 0}\n",
    );
    let plan = routes
        .http_route(&Request::get("/").facts())
        .expect("route");
    let mirrors = plan.mirrors();
    assert_eq!(mirrors.len(), 2, "a 0% mirror is dropped");
    assert_eq!(mirrors[0].destination.subset.as_deref(), Some("v2"));
    assert_eq!(mirrors[0].percentage, 50.0);
    assert!(mirrors[0].should_mirror(49.9) && !mirrors[0].should_mirror(50.0));
    assert_eq!(
        mirrors[1].destination.host,
        "shadow.other.svc.cluster.local"
    );
    assert_eq!(mirrors[1].percentage, 100.0);
    assert!(mirrors[1].should_mirror(99.99));
}

#[test]
fn route_names_follow_the_matched_block() {
    let routes = routes(
        "http:\n- name: ratings\n  match:\n  - name: v2\n    uri: {prefix: /v2}\n  - uri: {prefix: /v1}\n  route:\n  - destination: {host: reviews}\n",
    );
    let name = |uri: &str| {
        routes
            .http_route(&Request::get(uri).facts())
            .and_then(|p| p.name().map(str::to_string))
    };
    assert_eq!(name("/v2/x").as_deref(), Some("ratings.v2"));
    assert_eq!(name("/v1/x").as_deref(), Some("ratings"));
}

#[test]
fn unsupported_and_broken_rules_never_match() {
    let routes = routes(
        "http:\n- match:\n  - uri: {prefix: /delegated}\n  delegate: {name: productpage, namespace: nsA}\n- match:\n  - headers:\n      x-bad: {regex: '(unclosed'}\n  route:\n  - destination: {host: reviews, subset: bad-regex}\n- route:\n  - destination: {host: reviews, subset: fallback}\n",
    );
    assert_eq!(target(&routes, &Request::get("/delegated/x")), "fallback");
    assert_eq!(
        target(&routes, &Request::get("/").header("x-bad", "(unclosed")),
        "fallback"
    );
}

#[test]
fn tcp_rules_split_by_weight_and_fall_back_to_the_service() {
    let routes = routes(
        "tcp:\n- match:\n  - port: 27017\n    sourceLabels: {app: backup}\n  route:\n  - destination: {host: mongo.backup.svc.cluster.local, port: {number: 5555}}\n- match:\n  - port: 27017\n  route:\n  - destination: {host: mongo, subset: v1}\n    weight: 80\n  - destination: {host: mongo, subset: v2}\n    weight: 20\n- match:\n  - destinationSubnets: [10.96.0.0/12]\n  route:\n  - destination: {host: vip-only}\n",
    );
    let nobody = Source::default();
    let plan = routes.tcp_route(27017, None, &nobody);
    let mut counts = [0u32; 2];
    for roll in 0..1000u32 {
        match plan.pick(roll).and_then(|d| d.subset.as_deref()) {
            Some("v1") => counts[0] += 1,
            Some("v2") => counts[1] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(counts, [800, 200]);
    assert_eq!(
        plan.destinations()[0].host,
        "mongo.bookinfo.svc.cluster.local"
    );
    let backup = Source {
        labels: [("app".to_string(), "backup".to_string())].into(),
        ..Default::default()
    };
    let plan = routes.tcp_route(27017, None, &backup);
    assert_eq!(plan.destinations()[0].port, Some(5555));
    let vip: IpAddr = "10.100.0.1".parse().expect("ip");
    let plan = routes.tcp_route(80, Some(vip), &nobody);
    assert_eq!(
        plan.destinations()[0].host,
        "vip-only.bookinfo.svc.cluster.local"
    );
    // Nothing matches: the service itself.
    let plan = routes.tcp_route(80, None, &nobody);
    assert_eq!(plan.destinations()[0].host, SERVICE);
}

#[test]
fn compiled_routes_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<CompiledRoutes>();
    shareable::<HttpRoutePlan>();
    shareable::<TcpRoutePlan>();
}

#[test]
fn jwt_claims_route_and_headers_named_like_them_do_not() {
    let routes = routes(
        r#"
http:
- match:
  - headers:
      "@request.auth.claims.group": {exact: beta}
  route: [{destination: {host: reviews, subset: v2}}]
- match:
  - headers:
      "@request.auth.claims.org.team": {prefix: core}
  route: [{destination: {host: reviews, subset: v3}}]
- match:
  - withoutHeaders:
      "@request.auth.claims[roles]": {exact: reader}
    headers:
      "@request.auth.claims[roles]": {}
  route: [{destination: {host: reviews, subset: v4}}]
- route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/").claims(serde_json::json!({"group": "beta"}))
        ),
        "v2"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/").claims(serde_json::json!({"group": ["alpha", "beta"]}))
        ),
        "v2",
        "any string of a list claim"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/").claims(serde_json::json!({"group": "alpha"}))
        ),
        "v1"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/").claims(serde_json::json!({"org": {"team": "core-2"}}))
        ),
        "v3"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/").claims(serde_json::json!({"roles": ["writer"]}))
        ),
        "v4"
    );
    assert_eq!(
        target(
            &routes,
            &Request::get("/").claims(serde_json::json!({"roles": ["reader"]}))
        ),
        "v1"
    );
    // No token: no claim, whatever the headers say.
    assert_eq!(
        target(&routes, &Request::get("/").header("group", "beta")),
        "v1"
    );
    assert_eq!(target(&routes, &Request::get("/")), "v1");
}

/// The host a `tls` route sends a connection to (`None`: closed).
fn tls_target(
    routes: &CompiledRoutes,
    port: u16,
    destination: &str,
    source: &Source,
    sni: Option<&str>,
) -> Option<String> {
    let ip: IpAddr = destination.parse().expect("ip");
    routes
        .tls_route(port, Some(ip), source, sni)
        .map(|plan| plan.destinations()[0].host.clone())
}

#[test]
fn tls_rules_route_by_sni_exact_then_longest_wildcard_and_close_what_matches_none() {
    let routes = routes(
        "tls:\n- match:\n  - port: 443\n    sniHosts: [reviews.example.com]\n  route:\n  - destination: {host: exact}\n- match:\n  - port: 443\n    sniHosts: ['*.example.com']\n  route:\n  - destination: {host: wide}\n- match:\n  - port: 443\n    sniHosts: ['*.v2.example.com']\n  route:\n  - destination: {host: narrow}\n- match:\n  - port: 443\n    sniHosts: [reviews.example.com]\n  route:\n  - destination: {host: shadowed}\n- match:\n  - port: 8443\n    sniHosts: [other.example.com]\n  route:\n  - destination: {host: other-port}\n",
    );
    let nobody = Source::default();
    let at = |sni: Option<&str>| tls_target(&routes, 443, "10.96.0.10", &nobody, sni);
    assert!(routes.routes_tls(443, &nobody));
    assert_eq!(
        at(Some("reviews.example.com")).as_deref(),
        Some("exact.bookinfo.svc.cluster.local"),
        "an exact name wins, and the first of two equal matches"
    );
    assert_eq!(
        at(Some("Ratings.Example.com")).as_deref(),
        Some("wide.bookinfo.svc.cluster.local")
    );
    assert_eq!(
        at(Some("a.v2.example.com")).as_deref(),
        Some("narrow.bookinfo.svc.cluster.local"),
        "the longest wildcard wins whatever the order"
    );
    assert_eq!(at(Some("example.org")), None, "no chain: closed");
    assert_eq!(at(None), None, "a ClientHello without SNI matches no name");
    assert_eq!(
        at(Some("other.example.com")).as_deref(),
        Some("wide.bookinfo.svc.cluster.local"),
        "a match block of another port does not exist on 443"
    );
    // A port no match block names is not routed by SNI: tcp rules or the service.
    assert!(!routes.routes_tls(9443, &nobody));
}

#[test]
fn tls_matches_select_by_source_and_by_the_most_specific_destination_subnet() {
    let routes = routes(
        "tls:\n- match:\n  - sniHosts: [db.example.com]\n    sourceLabels: {app: backup}\n  route:\n  - destination: {host: backup-db}\n- match:\n  - sniHosts: [db.example.com]\n    destinationSubnets: [10.96.0.0/12]\n  route:\n  - destination: {host: cluster-db}\n- match:\n  - sniHosts: ['*.example.com']\n    destinationSubnets: [10.96.0.10/32]\n  route:\n  - destination: {host: pinned}\n- match:\n  - sniHosts: [db.example.com]\n    sourceNamespace: ops\n  route:\n  - destination: {host: ops-db}\n",
    );
    let nobody = Source::default();
    let backup = Source {
        labels: [("app".to_string(), "backup".to_string())].into(),
        ..Default::default()
    };
    let ops = Source {
        namespace: Some("ops".into()),
        ..Default::default()
    };
    let db = Some("db.example.com");
    assert_eq!(
        tls_target(&routes, 443, "10.100.0.1", &nobody, db).as_deref(),
        Some("cluster-db.bookinfo.svc.cluster.local"),
        "a subnet holding the address is more specific than none"
    );
    assert_eq!(
        tls_target(&routes, 443, "10.96.0.10", &nobody, db).as_deref(),
        Some("pinned.bookinfo.svc.cluster.local"),
        "the /32 is the most specific; within it only the wildcard is left"
    );
    assert_eq!(
        tls_target(&routes, 443, "192.168.0.1", &backup, db).as_deref(),
        Some("backup-db.bookinfo.svc.cluster.local")
    );
    assert_eq!(
        tls_target(&routes, 443, "192.168.0.1", &ops, db).as_deref(),
        Some("ops-db.bookinfo.svc.cluster.local")
    );
    assert_eq!(
        tls_target(&routes, 443, "192.168.0.1", &nobody, db),
        None,
        "no match block without source conditions holds this address"
    );
}

/// A TCPRoute attached to the Service (`parentRefs` port `port`), its backends resolved
/// to `(host, port, weight)`.
fn tcp_route_bound(
    name: &str,
    created: &str,
    port: Option<u16>,
    backends: &[(&str, u16, u32)],
) -> Arc<weft_config::registry::bound_route::BoundRoute> {
    use weft_config::registry::bound_route::{
        BoundRoute, GatewayRoute, RefAt, ResolvedRef, RouteBackends,
    };
    let refs: Vec<String> = backends
        .iter()
        .map(|(host, port, weight)| format!("{{name: {host}, port: {port}, weight: {weight}}}"))
        .collect();
    let route = serde_yaml::from_str(&format!(
        "metadata: {{name: {name}, namespace: bookinfo, creationTimestamp: \"{created}\"}}\nspec: {{parentRefs: [{{group: \"\", kind: Service, name: reviews}}], rules: [{{backendRefs: [{}]}}]}}",
        refs.join(", ")
    ))
    .expect("a TCPRoute");
    Arc::new(BoundRoute {
        route: GatewayRoute::Tcp(Arc::new(route)),
        service_namespace: "bookinfo".into(),
        port,
        backends: Arc::new(RouteBackends {
            refs: backends
                .iter()
                .enumerate()
                .map(|(b, (host, port, _))| {
                    (
                        RefAt::Backend {
                            rule: 0,
                            backend: b,
                        },
                        Ok(ResolvedRef {
                            host: format!("{host}.bookinfo.svc.cluster.local"),
                            port: *port,
                        }),
                    )
                })
                .collect(),
        }),
    })
}

fn compile_with(
    virtual_services: &[&str],
    gateway_routes: Vec<Arc<weft_config::registry::bound_route::BoundRoute>>,
) -> CompiledRoutes {
    CompiledRoutes::compile(
        &HostRoutes {
            virtual_services: virtual_services
                .iter()
                .map(|yaml| Arc::new(serde_yaml::from_str::<VirtualService>(yaml).expect("VS")))
                .collect(),
            gateway_routes,
            destination_rule: None,
        },
        SERVICE,
        &MeshSettings::default(),
    )
}

fn tcp_shares(routes: &CompiledRoutes, port: u16) -> Vec<(String, Option<u16>, u32)> {
    routes
        .tcp_route(port, None, &Source::default())
        .destinations()
        .iter()
        .map(|d| (d.host.clone(), d.port, d.weight))
        .collect()
}

#[test]
fn a_tcp_route_attached_to_the_service_shifts_its_connections_by_weight() {
    // Istio's TCP traffic shifting task, ambient mode: 80/20 between v1 and v2.
    let shifting = tcp_route_bound(
        "tcp-echo",
        "2026-01-01T00:00:00Z",
        Some(9000),
        &[("tcp-echo-v1", 9000, 80), ("tcp-echo-v2", 9000, 20)],
    );
    let routes = compile_with(&[], vec![shifting.clone()]);
    assert_eq!(
        tcp_shares(&routes, 9000),
        [
            (
                "tcp-echo-v1.bookinfo.svc.cluster.local".to_string(),
                Some(9000),
                80
            ),
            (
                "tcp-echo-v2.bookinfo.svc.cluster.local".to_string(),
                Some(9000),
                20
            ),
        ]
    );
    // The picks follow the weights: a fifth of the rolls to v2.
    let plan = routes.tcp_route(9000, None, &Source::default());
    let to_v2 = (0..1000u32)
        .filter(|roll| {
            plan.pick(*roll)
                .is_some_and(|d| d.host.starts_with("tcp-echo-v2"))
        })
        .count();
    assert_eq!(to_v2, 200);
    // Another port of the Service is not the route's: the Service itself.
    assert_eq!(
        tcp_shares(&routes, 9001),
        [(SERVICE.to_string(), None, 100)]
    );
    // Without a port on the parentRef, every port.
    let every = tcp_route_bound(
        "all",
        "2026-01-01T00:00:00Z",
        None,
        &[("tcp-echo-v1", 9000, 1)],
    );
    assert_eq!(
        tcp_shares(&compile_with(&[], vec![every]), 9001),
        [(
            "tcp-echo-v1.bookinfo.svc.cluster.local".to_string(),
            Some(9000),
            1
        )]
    );
    // A TCPRoute is no HTTP route: the Service's VirtualService keeps routing its HTTP.
    let http = vs("http:\n- route:\n  - destination: {host: reviews-v2}");
    let routes = compile_with(&[&http], vec![shifting]);
    let request = Request::get("/");
    let plan = routes.http_route(&request.facts()).expect("an HTTP route");
    assert_eq!(
        plan.pick(0).map(|d| d.host.as_str()),
        Some("reviews-v2.bookinfo.svc.cluster.local")
    );
}
