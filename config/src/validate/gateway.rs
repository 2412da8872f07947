//! Istio's `Gateway` and the `kubernetes.io/tls` Secrets its servers name.
//!
//! [`gateway`] refuses what Istio's validation refuses, and what weft's ingress gateway
//! cannot honour where security depends on it: certificates from files in the gateway's
//! pod (weft reads Secrets), `ISTIO_MUTUAL` and `AUTO_PASSTHROUGH` (mesh-internal and
//! multi-network modes it does not serve), a `maxProtocolVersion` below TLS 1.2 (it serves
//! 1.2 and 1.3 only), cipher suites nobody knows. [`gateway_warnings`] says what is
//! accepted and served differently: a `minProtocolVersion` below 1.2, cipher suites it
//! does not offer. [`cross_warnings`] looks at Gateways, VirtualServices and Secrets
//! together: a VirtualService bound to a Gateway that does not exist, a credential Secret
//! that is missing, two Gateways claiming a port and host.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::paths::{FieldPath, Issues};
use crate::api::gateway::{Gateway, GatewaySpec, ServerTlsMode};
use crate::api::kubernetes::{CA_CERT_KEY, Secret, TLS_CERT_KEY, TLS_KEY_KEY};
use crate::api::networking::VirtualService;
use crate::api::{Kind, ObjectRef};
use crate::refusal::{FieldIssue, Warning};
use crate::translate::gateway::{GatewayRef, MESH, Protocol, resolve_gateway_name};

/// The TLS versions Istio names, in order.
const TLS_VERSIONS: [&str; 5] = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

/// Envoy's (BoringSSL's) TLS 1.2 cipher suite names, which Istio passes on.
pub const ENVOY_CIPHER_SUITES: [&str; 14] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
];

/// The ones weft's gateway offers (rustls: forward-secret AEAD suites only).
pub const OFFERED_CIPHER_SUITES: [&str; 6] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// The suites of a `cipherSuites` entry: a name, or BoringSSL's equal-preference group
/// `[A|B]`.
pub fn cipher_names(entry: &str) -> Vec<&str> {
    entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split('|')
        .map(str::trim)
        .collect()
}

fn version_rank(version: &str) -> Option<usize> {
    TLS_VERSIONS.iter().position(|v| *v == version)
}

/// A DNS name or wildcard name (`*`, `*.example.com`, `example.com`).
fn valid_host(host: &str) -> bool {
    if host == "*" {
        return true;
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_namespace(namespace: &str) -> bool {
    namespace == "*"
        || namespace == "."
        || (!namespace.is_empty()
            && namespace.len() <= 63
            && namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
}

pub(super) fn gateway(spec: &GatewaySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    if spec.servers.is_empty() {
        issues.add(
            &root.field("servers"),
            "a gateway must have at least one server",
        );
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut port_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, server) in spec.servers.iter().enumerate() {
        let at = root.field("servers").index(i);
        let port = at.field("port");
        if !(1..=65535).contains(&server.port.number) {
            issues.add(
                &port.field("number"),
                format!("{} is not a port number (1–65535)", server.port.number),
            );
        }
        if server.port.name.is_empty() {
            issues.add(&port.field("name"), "required");
        } else if port_names.insert(server.port.name.as_str(), i).is_some() {
            issues.add(
                &port.field("name"),
                format!(
                    "port names in servers must be unique: duplicate name {:?}",
                    server.port.name
                ),
            );
        }
        let protocol = Protocol::parse(&server.port.protocol);
        if protocol.is_none() {
            issues.add(
                &port.field("protocol"),
                format!(
                    "{:?} is not a protocol a gateway serves (HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, MYSQL, REDIS)",
                    server.port.protocol
                ),
            );
        }
        if server.hosts.is_empty() {
            issues.add(&at.field("hosts"), "at least one host is required");
        }
        for (h, entry) in server.hosts.iter().enumerate() {
            let (namespace, host) = match entry.split_once('/') {
                Some((namespace, host)) => (Some(namespace), host),
                None => (None, entry.as_str()),
            };
            if namespace.is_some_and(|ns| !valid_namespace(ns)) {
                issues.add(
                    &at.field("hosts").index(h),
                    format!("{entry:?}: the namespace part must be `*`, `.` or a namespace name"),
                );
            } else if !valid_host(host) {
                issues.add(
                    &at.field("hosts").index(h),
                    format!("{entry:?}: {host:?} is not a host name or wildcard"),
                );
            }
        }
        if let Some(name) = &server.name
            && names.insert(name.as_str(), i).is_some()
        {
            issues.add(&at.field("name"), format!("duplicate server name {name:?}"));
        }
        if let Some(bind) = &server.bind
            && bind.parse::<std::net::IpAddr>().is_err()
        {
            issues.add(
                &at.field("bind"),
                format!(
                    "{bind:?}: weft's gateway binds IP addresses only (not unix domain sockets)"
                ),
            );
        }
        let tls_path = at.field("tls");
        let Some(tls) = &server.tls else {
            if matches!(protocol, Some(Protocol::Https | Protocol::Tls)) {
                issues.add(
                    &tls_path,
                    "server must have TLS settings for HTTPS/TLS protocols",
                );
            }
            continue;
        };
        let redirect_only = tls.https_redirect == Some(true) && tls.mode.is_none();
        let mode = tls.mode.unwrap_or_default();
        match mode {
            ServerTlsMode::IstioMutual => issues.add(
                &tls_path.field("mode"),
                "ISTIO_MUTUAL is not served by weft's gateway (it presents no mesh certificate to clients)",
            ),
            ServerTlsMode::AutoPassthrough => issues.add(
                &tls_path.field("mode"),
                "AUTO_PASSTHROUGH (multi-network east-west) is not served by weft's gateway",
            ),
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if tls.credential_name.as_deref().unwrap_or_default().is_empty() {
                    issues.add(
                        &tls_path.field("credentialName"),
                        format!(
                            "{mode:?} TLS needs a credentialName: a Secret of type kubernetes.io/tls in the gateway's namespace"
                        ),
                    );
                }
                if protocol.is_some_and(Protocol::is_http) {
                    issues.add(
                        &port.field("protocol"),
                        format!(
                            "{}: TLS termination needs protocol HTTPS (or TLS for TCP behind it)",
                            server.port.protocol
                        ),
                    );
                }
            }
            ServerTlsMode::Passthrough => {
                if !redirect_only && protocol.is_some_and(Protocol::is_http) {
                    issues.add(
                        &tls_path.field("mode"),
                        "PASSTHROUGH needs protocol TLS or HTTPS",
                    );
                }
            }
        }
        for (field, value) in [
            ("serverCertificate", &tls.server_certificate),
            ("privateKey", &tls.private_key),
            ("caCertificates", &tls.ca_certificates),
        ] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                issues.add(
                    &tls_path.field(field),
                    "weft's gateway reads certificates from Secrets (credentialName), not from files in its pod",
                );
            }
        }
        if let Some(name) = &tls.credential_name
            && (name.contains("://") || name.contains('/'))
        {
            issues.add(
                &tls_path.field("credentialName"),
                format!("{name:?}: the name of a Secret in the gateway's namespace"),
            );
        }
        let min = tls.min_protocol_version.as_deref();
        let max = tls.max_protocol_version.as_deref();
        for (field, value) in [("minProtocolVersion", min), ("maxProtocolVersion", max)] {
            if let Some(version) = value
                && version_rank(version).is_none()
            {
                issues.add(
                    &tls_path.field(field),
                    format!("{version:?} is not one of {}", TLS_VERSIONS.join(", ")),
                );
            }
        }
        if let (Some(min_rank), Some(max_rank)) =
            (min.and_then(version_rank), max.and_then(version_rank))
            && min_rank > 0
            && max_rank > 0
            && min_rank > max_rank
        {
            issues.add(
                &tls_path.field("maxProtocolVersion"),
                "below minProtocolVersion",
            );
        }
        if let Some(rank) = max.and_then(version_rank)
            && (1..=2).contains(&rank)
        {
            issues.add(
                &tls_path.field("maxProtocolVersion"),
                "weft's gateway serves TLS 1.2 and 1.3 only: a maximum below TLS 1.2 cannot be honoured",
            );
        }
        for (c, entry) in tls.cipher_suites.iter().enumerate() {
            for name in cipher_names(entry) {
                if !ENVOY_CIPHER_SUITES.contains(&name) {
                    issues.add(
                        &tls_path.field("cipherSuites").index(c),
                        format!("{name:?} is not a cipher suite Envoy knows"),
                    );
                }
            }
        }
    }
    issues.into_vec()
}

/// Accepted and served otherwise than written: a minimum below TLS 1.2 (those clients are
/// refused), listed cipher suites weft does not offer, fields gateways do not use.
pub(super) fn gateway_warnings(spec: &GatewaySpec) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    let root = FieldPath::spec();
    for (i, server) in spec.servers.iter().enumerate() {
        let at = root.field("servers").index(i);
        if server.default_endpoint.is_some() {
            issues.add(
                &at.field("defaultEndpoint"),
                "applies to sidecars only; a gateway does not use it",
            );
        }
        if server.port.target_port.is_some() {
            issues.add(
                &at.field("port").field("targetPort"),
                "deprecated and not used by gateways: the gateway listens on its Service's targetPort",
            );
        }
        let Some(tls) = &server.tls else {
            continue;
        };
        let tls_path = at.field("tls");
        if let Some(rank) = tls.min_protocol_version.as_deref().and_then(version_rank)
            && (1..=2).contains(&rank)
        {
            issues.add(
                &tls_path.field("minProtocolVersion"),
                "weft's gateway serves TLS 1.2 and 1.3 only: clients of older versions are refused",
            );
        }
        let listed: Vec<&str> = tls
            .cipher_suites
            .iter()
            .flat_map(|e| cipher_names(e))
            .filter(|n| ENVOY_CIPHER_SUITES.contains(n))
            .collect();
        let not_offered: Vec<&str> = listed
            .iter()
            .copied()
            .filter(|n| !OFFERED_CIPHER_SUITES.contains(n))
            .collect();
        if !not_offered.is_empty() {
            let all = not_offered.len() == listed.len();
            issues.add(
                &tls_path.field("cipherSuites"),
                format!(
                    "not offered by weft's gateway (forward-secret AEAD suites only): {}{}",
                    not_offered.join(", "),
                    if all {
                        "; none of the listed suites is, so TLS 1.2 clients are refused (TLS 1.3 is unaffected)"
                    } else {
                        ""
                    }
                ),
            );
        }
        if !tls.subject_alt_names.is_empty()
            && !matches!(
                tls.mode,
                Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
            )
        {
            issues.add(
                &tls_path.field("subjectAltNames"),
                "only checked on client certificates (MUTUAL, OPTIONAL_MUTUAL); ignored here",
            );
        }
    }
    issues.into_vec()
}

/// A `kubernetes.io/tls` Secret needs its certificate and key, as the API server requires.
pub(super) fn secret(secret: &Secret) -> Vec<FieldIssue> {
    let mut issues = Issues::default();
    for key in [TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY] {
        let at = FieldPath::root("data").key(key);
        match secret.value(key) {
            Err(e) => issues.add(&at, e.to_string()),
            Ok(None) if key != CA_CERT_KEY => {
                issues.add(&at, "required in a Secret of type kubernetes.io/tls")
            }
            Ok(Some(bytes)) if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") => {
                issues.add(&at, "not PEM")
            }
            Ok(_) => {}
        }
    }
    issues.into_vec()
}

fn gateway_ref_object(gateway: &Gateway) -> ObjectRef {
    let r = GatewayRef::of(gateway);
    ObjectRef::new(Kind::Gateway, r.namespace, r.name)
}

/// What only shows across objects:
/// - a VirtualService's `gateways` (or a match block's) naming a Gateway that does not
///   exist: nothing serves it there;
/// - with `secrets` (the namespace a gateway reads its credentials in, and whether a TLS
///   Secret is there): a server whose `credentialName` is missing there, which refuses TLS
///   connections until it appears;
/// - two Gateways of the same selector claiming a host on the same port (Istio's
///   `ConflictingGateways` analysis), on both: over TLS the older server keeps the host,
///   over plaintext HTTP their routes merge, the older Gateway's first.
///
/// The namespace whose Secrets a process reads, and whether one of them exists by name.
pub type SecretsSeen<'a> = (&'a str, &'a dyn Fn(&str) -> bool);

/// (a Gateway's selector, a port) → host → the Gateways claiming it, in age order.
type Claims = HashMap<(Vec<(String, String)>, u32), HashMap<String, Vec<GatewayRef>>>;

/// `gateways` oldest first.
pub fn cross_warnings(
    gateways: &[&Arc<Gateway>],
    virtual_services: &[&Arc<VirtualService>],
    secrets: Option<SecretsSeen<'_>>,
) -> BTreeMap<ObjectRef, Vec<Warning>> {
    let mut warnings: BTreeMap<ObjectRef, Vec<Warning>> = BTreeMap::new();
    let existing: HashSet<GatewayRef> = gateways.iter().map(|g| GatewayRef::of(g)).collect();
    for vs in virtual_services {
        let namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
        let object = ObjectRef::new(
            Kind::VirtualService,
            namespace,
            vs.metadata.name.as_deref().unwrap_or_default(),
        );
        let mut check = |name: &str, field: String| {
            if name == MESH {
                return;
            }
            if let Some(gateway) = resolve_gateway_name(name, namespace)
                && !existing.contains(&gateway)
            {
                warnings.entry(object.clone()).or_default().push(
                    FieldIssue::new(
                        field,
                        format!(
                            "Gateway {gateway} does not exist: no gateway serves these routes for it"
                        ),
                    )
                    .refusal(&object),
                );
            }
        };
        for (i, name) in vs.spec.gateways.iter().enumerate() {
            check(name, format!("spec.gateways[{i}]"));
        }
        for (r, rule) in vs.spec.http.iter().enumerate() {
            for (m, block) in rule.matches.iter().enumerate() {
                for (g, name) in block.gateways.iter().enumerate() {
                    check(name, format!("spec.http[{r}].match[{m}].gateways[{g}]"));
                }
            }
        }
    }
    if let Some((namespace, has)) = secrets {
        for gateway in gateways {
            let object = gateway_ref_object(gateway);
            for (i, server) in gateway.spec.servers.iter().enumerate() {
                let Some(tls) = &server.tls else { continue };
                let Some(name) = tls.credential_name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                if !has(name) {
                    warnings.entry(object.clone()).or_default().push(
                        FieldIssue::new(
                            format!("spec.servers[{i}].tls.credentialName"),
                            format!(
                                "no Secret {name} of type kubernetes.io/tls in namespace {namespace}, where the gateway reads its credentials: this server refuses TLS connections until there is"
                            ),
                        )
                        .refusal(&object),
                    );
                }
            }
        }
    }
    let mut claims: Claims = HashMap::new();
    for gateway in gateways {
        let selector: Vec<(String, String)> = gateway
            .spec
            .selector
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let me = GatewayRef::of(gateway);
        for server in &gateway.spec.servers {
            let by_host = claims
                .entry((selector.clone(), server.port.number))
                .or_default();
            for host in &server.hosts {
                let claimants = by_host.entry(host.clone()).or_default();
                if !claimants.contains(&me) {
                    claimants.push(me.clone());
                }
            }
        }
    }
    for gateway in gateways {
        let me = GatewayRef::of(gateway);
        let object = gateway_ref_object(gateway);
        let selector: Vec<(String, String)> = gateway
            .spec
            .selector
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (i, server) in gateway.spec.servers.iter().enumerate() {
            let Some(by_host) = claims.get(&(selector.clone(), server.port.number)) else {
                continue;
            };
            let mut others: Vec<String> = Vec::new();
            let mut older = false;
            for host in &server.hosts {
                let claimants = by_host.get(host).map(Vec::as_slice).unwrap_or_default();
                for other in claimants.iter().filter(|g| **g != me) {
                    if !others.contains(&other.to_string()) {
                        others.push(other.to_string());
                    }
                    let mine = claimants.iter().position(|g| *g == me);
                    let theirs = claimants.iter().position(|g| g == other);
                    older |= theirs < mine;
                }
            }
            if others.is_empty() {
                continue;
            }
            let outcome = if server.tls.is_some() {
                if older {
                    "over TLS the older Gateway's server keeps the host and this one does not serve it"
                } else {
                    "over TLS this (older) Gateway's server keeps the host"
                }
            } else {
                "their HTTP routes are merged, the older Gateway's first"
            };
            warnings.entry(object.clone()).or_default().push(
                FieldIssue::new(
                    format!("spec.servers[{i}]"),
                    format!(
                        "conflict with Gateway {} (same selector, port {}, hosts {}): {outcome}",
                        others.join(", "),
                        server.port.number,
                        server.hosts.join(",")
                    ),
                )
                .refusal(&object),
            );
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> GatewaySpec {
        serde_yaml::from_str(yaml).expect("spec YAML")
    }

    fn reasons(issues: &[FieldIssue]) -> Vec<String> {
        issues
            .iter()
            .map(|i| format!("{}: {}", i.field, i.reason))
            .collect()
    }

    #[test]
    fn istio_s_examples_pass() {
        for yaml in [
            "selector: {istio: ingressgateway}\nservers:\n- port: {number: 8080, name: http, protocol: HTTP}\n  hosts: ['*']\n",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [httpbin.example.com]\n  tls: {mode: SIMPLE, credentialName: httpbin-credential}\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [httpbin.example.com]\n  tls: {httpsRedirect: true}\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [nginx.example.com]\n  tls: {mode: PASSTHROUGH}\n- port: {number: 8443, name: mtls, protocol: HTTPS}\n  hosts: [./a.example.com, 'ns/*.example.com']\n  tls: {mode: MUTUAL, credentialName: c, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}\n",
        ] {
            let issues = gateway(&spec(yaml));
            assert!(issues.is_empty(), "{yaml}: {:?}", reasons(&issues));
        }
    }

    #[test]
    fn refuses_what_istio_refuses_and_what_weft_cannot_honour() {
        let issues = gateway(&spec(
            "servers:\n- port: {number: 443, name: a, protocol: HTTPS}\n  hosts: [a.example.com]\n- port: {number: 443, name: a, protocol: HTTPS}\n  hosts: ['bad host']\n  tls: {mode: SIMPLE, serverCertificate: /etc/cert.pem, privateKey: /etc/key.pem}\n- port: {number: 70000, name: c, protocol: QUIC}\n  hosts: ['Bad_NS/x.com']\n  tls: {mode: ISTIO_MUTUAL, maxProtocolVersion: TLSV1_1, cipherSuites: [RC4-MD5]}\n",
        ));
        let text = reasons(&issues).join("\n");
        for expected in [
            "spec.servers[0].tls: server must have TLS settings",
            "spec.servers[1].port.name: port names in servers must be unique",
            "spec.servers[1].hosts[0]: \"bad host\"",
            "spec.servers[1].tls.credentialName: Simple TLS needs a credentialName",
            "spec.servers[1].tls.serverCertificate: weft's gateway reads certificates from Secrets",
            "spec.servers[2].port.number: 70000",
            "spec.servers[2].port.protocol: \"QUIC\"",
            "spec.servers[2].hosts[0]",
            "spec.servers[2].tls.mode: ISTIO_MUTUAL",
            "spec.servers[2].tls.maxProtocolVersion: weft's gateway serves TLS 1.2 and 1.3 only",
            "spec.servers[2].tls.cipherSuites[0]: \"RC4-MD5\"",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn warns_about_what_is_served_otherwise() {
        let issues = gateway_warnings(&spec(
            "servers:\n- port: {number: 443, name: a, protocol: HTTPS}\n  hosts: [a.example.com]\n  tls: {mode: SIMPLE, credentialName: a, minProtocolVersion: TLSV1_0, cipherSuites: [AES128-SHA, ECDHE-RSA-AES128-GCM-SHA256]}\n",
        ));
        let text = reasons(&issues).join("\n");
        assert!(
            text.contains("minProtocolVersion: weft's gateway serves TLS 1.2 and 1.3 only"),
            "{text}"
        );
        assert!(text.contains("cipherSuites: not offered by weft's gateway (forward-secret AEAD suites only): AES128-SHA"), "{text}");
        assert!(!text.contains("none of the listed"), "{text}");
    }

    #[test]
    fn a_tls_secret_needs_a_certificate_and_a_key() {
        let ok: Secret = serde_yaml::from_str(
            "metadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: '-----BEGIN CERTIFICATE-----', tls.key: '-----BEGIN PRIVATE KEY-----'}\n",
        )
        .expect("secret");
        assert!(secret(&ok).is_empty());
        let bad: Secret = serde_yaml::from_str(
            "metadata: {name: s}\ntype: kubernetes.io/tls\ndata: {tls.crt: '!!!'}\n",
        )
        .expect("secret");
        let text = reasons(&secret(&bad)).join("\n");
        assert!(
            text.contains("data[\"tls.crt\"]: data.tls.crt is not base64"),
            "{text}"
        );
        assert!(text.contains("data[\"tls.key\"]: required"), "{text}");
        assert!(!format!("{bad:?}").contains("!!!"), "Debug shows no value");
    }

    fn gw(yaml: &str) -> Arc<Gateway> {
        Arc::new(serde_yaml::from_str(yaml).expect("Gateway"))
    }

    #[test]
    fn cross_object_warnings_name_each_bad_object() {
        let a = gw(
            "metadata: {name: a, namespace: web}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [shop.example.com]\n    tls: {mode: SIMPLE, credentialName: shop-cert}\n",
        );
        let b = gw(
            "metadata: {name: b, namespace: web}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [shop.example.com]\n    tls: {mode: SIMPLE, credentialName: present}\n",
        );
        let vs: Arc<VirtualService> = Arc::new(
            serde_yaml::from_str(
                "metadata: {name: v, namespace: web}\nspec: {hosts: ['*'], gateways: [a, missing, mesh]}",
            )
            .expect("vs"),
        );
        let has = |name: &str| name == "present";
        let found = cross_warnings(&[&a, &b], &[&vs], Some(("istio-system", &has)));
        let text: Vec<String> = found.values().flatten().map(ToString::to_string).collect();
        let text = text.join("\n");
        assert!(
            text.contains(
                "VirtualService web/v: spec.gateways[1]: Gateway web/missing does not exist"
            ),
            "{text}"
        );
        assert!(
            text.contains("Gateway web/a: spec.servers[0].tls.credentialName: no Secret shop-cert"),
            "{text}"
        );
        assert!(!text.contains("no Secret present"), "{text}");
        assert!(
            text.contains("Gateway web/a: spec.servers[0]: conflict with Gateway web/b")
                && text.contains("Gateway web/b: spec.servers[0]: conflict with Gateway web/a"),
            "{text}"
        );
        assert!(
            text.contains(
                "the older Gateway's server keeps the host and this one does not serve it"
            ),
            "{text}"
        );
        let without_secrets = cross_warnings(&[&a, &b], &[&vs], None);
        assert!(
            !without_secrets
                .values()
                .flatten()
                .any(|w| w.field.contains("credentialName")),
            "a view without Secrets cannot tell"
        );
    }
}
