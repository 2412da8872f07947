//! AuthorizationPolicy decisions per connection (`authz::l4::evaluate`, the node agent)
//! and per request (`authz::l7::evaluate`, the waypoint) with 0, 1 and 10 policies: ALLOW
//! policies each naming one principal, where the caller is the first or the last one named
//! (or none); DENY policies each naming one path prefix (L7) or one principal (L4, where
//! paths are not known), where the first or the last one denies (or none).
//!
//! `cargo bench -p weft-config --bench policy`.
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use weft_config::api::security::AuthorizationPolicy;
use weft_config::authz::Decision;
use weft_config::authz::l4::{self, L4Request};
use weft_config::authz::l7::{self, L7Request};

const POLICIES: usize = 10;

fn policy(yaml: &str) -> Arc<AuthorizationPolicy> {
    Arc::new(serde_yaml::from_str(yaml).expect("AuthorizationPolicy"))
}

/// Principal of the `i`th team's client.
fn team(i: usize) -> String {
    format!("cluster.local/ns/team-{i}/sa/client")
}

fn allow_principals(count: usize) -> Vec<Arc<AuthorizationPolicy>> {
    (0..count)
        .map(|i| {
            policy(&format!(
                "kind: AuthorizationPolicy\nmetadata: {{name: allow-team-{i}, namespace: shop}}\nspec:\n  action: ALLOW\n  rules: [{{from: [{{source: {{principals: [\"{}\"]}}}}]}}]\n",
                team(i)
            ))
        })
        .collect()
}

fn deny_principals(count: usize) -> Vec<Arc<AuthorizationPolicy>> {
    (0..count)
        .map(|i| {
            policy(&format!(
                "kind: AuthorizationPolicy\nmetadata: {{name: deny-team-{i}, namespace: shop}}\nspec:\n  action: DENY\n  rules: [{{from: [{{source: {{principals: [\"{}\"]}}}}]}}]\n",
                team(i)
            ))
        })
        .collect()
}

fn deny_paths(count: usize) -> Vec<Arc<AuthorizationPolicy>> {
    (0..count)
        .map(|i| {
            policy(&format!(
                "kind: AuthorizationPolicy\nmetadata: {{name: deny-admin-{i}, namespace: shop}}\nspec:\n  action: DENY\n  rules: [{{to: [{{operation: {{paths: [\"/admin-{i}/*\"]}}}}]}}]\n"
            ))
        })
        .collect()
}

fn refs(policies: &[Arc<AuthorizationPolicy>]) -> Vec<&Arc<AuthorizationPolicy>> {
    policies.iter().collect()
}

fn l4_request(principal: &str) -> L4Request {
    L4Request {
        principal: Some(principal.to_string()),
        source_ip: Some("10.244.1.10".parse().expect("ip")),
        destination_ip: "10.244.2.10".parse().expect("ip"),
        destination_port: 9080,
    }
}

fn bench_l4(c: &mut Criterion) {
    let one = allow_principals(1);
    let allows = allow_principals(POLICIES);
    let denies = deny_principals(POLICIES);
    let (first, last, stranger) = (team(0), team(POLICIES - 1), team(POLICIES));
    let cases: [(&str, &[Arc<AuthorizationPolicy>], &str, bool); 8] = [
        ("0 policies", &[], &first, true),
        ("1 ALLOW by principal, matches", &one, &first, true),
        ("10 ALLOW by principal, 1st matches", &allows, &first, true),
        ("10 ALLOW by principal, 10th matches", &allows, &last, true),
        (
            "10 ALLOW by principal, none matches",
            &allows,
            &stranger,
            false,
        ),
        ("10 DENY by principal, 1st denies", &denies, &first, false),
        ("10 DENY by principal, 10th denies", &denies, &last, false),
        (
            "10 DENY by principal, none denies",
            &denies,
            &stranger,
            true,
        ),
    ];
    let mut group = c.benchmark_group("policy/l4");
    for (name, policies, principal, allowed) in cases {
        let policies = refs(policies);
        let request = l4_request(principal);
        assert_eq!(
            l4::evaluate(&policies, &request) == Decision::Allow,
            allowed,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| l4::evaluate(black_box(&policies), black_box(&request)))
        });
    }
    group.finish();
}

fn l7_request<'a>(
    principal: &'a str,
    path: &'a str,
    method: &'a Method,
    headers: &'a HeaderMap,
) -> L7Request<'a> {
    L7Request {
        principal: Some(principal),
        source_ip: Some("10.244.1.10".parse().expect("ip")),
        remote_ip: None,
        destination_ip: Some("10.244.2.10".parse().expect("ip")),
        destination_port: 9080,
        method,
        path,
        host: "reviews.shop.svc.cluster.local:9080",
        headers,
        sni: None,
        auth: None,
    }
}

fn bench_l7(c: &mut Criterion) {
    let one = allow_principals(1);
    let allows = allow_principals(POLICIES);
    let denies = deny_paths(POLICIES);
    let (first, last, stranger) = (team(0), team(POLICIES - 1), team(POLICIES));
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("x-request-id", "5b0b7f4e-9a61-4c1e-8a57-0c6b1d0f9e21"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    let get = Method::GET;
    let request = |principal, path| l7_request(principal, path, &get, &headers);
    let admin_first = "/admin-0/users";
    let admin_last = "/admin-9/users";
    let cases: [(&str, &[Arc<AuthorizationPolicy>], L7Request<'_>, bool); 8] = [
        ("0 policies", &[], request(&first, "/reviews/0"), true),
        (
            "1 ALLOW by principal, matches",
            &one,
            request(&first, "/reviews/0"),
            true,
        ),
        (
            "10 ALLOW by principal, 1st matches",
            &allows,
            request(&first, "/reviews/0"),
            true,
        ),
        (
            "10 ALLOW by principal, 10th matches",
            &allows,
            request(&last, "/reviews/0"),
            true,
        ),
        (
            "10 ALLOW by principal, none matches",
            &allows,
            request(&stranger, "/reviews/0"),
            false,
        ),
        (
            "10 DENY by path, 1st denies",
            &denies,
            request(&first, admin_first),
            false,
        ),
        (
            "10 DENY by path, 10th denies",
            &denies,
            request(&first, admin_last),
            false,
        ),
        (
            "10 DENY by path, none denies",
            &denies,
            request(&first, "/reviews/0"),
            true,
        ),
    ];
    let mut group = c.benchmark_group("policy/l7");
    for (name, policies, request, allowed) in cases {
        let policies = refs(policies);
        assert_eq!(
            l7::evaluate(&policies, &request) == Decision::Allow,
            allowed,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| l7::evaluate(black_box(&policies), black_box(&request)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_l4, bench_l7);
criterion_main!(benches);
