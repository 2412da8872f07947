//! The extension provider a CUSTOM policy names, as the proxies use it: its settings from
//! the mesh config (Istio's defaults applied), and the service it runs as, found in the
//! registry as Istio finds it (`[<namespace>/]<hostname>` of a Service or ServiceEntry; a
//! hostname alone must be unambiguous).
//!
//! A provider that is not defined, is not an ext-authz provider, or whose service is not
//! in the registry cannot be asked: Istio then denies the requests its policies cover (a
//! "bad CUSTOM action"), and so do the proxies, with the reason given here.
use std::sync::Arc;
use std::time::Duration;

use weft_core::ext_authz::settings::{
    BodySettings, DEFAULT_STATUS_ON_ERROR, DEFAULT_TIMEOUT, HttpSettings, Protocol, Settings,
    service_hostname,
};

use crate::api::mesh::{ExtAuthzRequestBody, ExtensionProvider, MeshConfig};
use crate::api::networking::{Resolution, ServiceEntry};
use crate::duration;
use crate::registry::Snapshot;
use crate::registry::model::Service;

/// The settings of provider `name`, or why it cannot be used.
pub fn provider_settings(mesh: &MeshConfig, name: &str) -> Result<Settings, String> {
    let Some(provider) = mesh.extension_provider(name) else {
        let known: Vec<&str> = mesh
            .extension_providers
            .iter()
            .filter(|p| p.envoy_ext_authz_grpc.is_some() || p.envoy_ext_authz_http.is_some())
            .map(|p| p.name.as_str())
            .collect();
        return Err(format!(
            "the mesh config defines no extension provider {name:?} (ext-authz providers: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    };
    settings(provider)
}

fn settings(provider: &ExtensionProvider) -> Result<Settings, String> {
    let name = &provider.name;
    let port = |port: u32| {
        u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("extension provider {name}: port {port} is not a port"))
    };
    let timeout = |text: Option<&str>| -> Result<Duration, String> {
        text.map_or(Ok(DEFAULT_TIMEOUT), |t| {
            duration::parse(t).map_err(|e| format!("extension provider {name}: timeout: {e}"))
        })
    };
    let status = |text: Option<&str>| -> Result<u16, String> {
        text.map_or(Ok(DEFAULT_STATUS_ON_ERROR), |t| {
            t.parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    format!("extension provider {name}: statusOnError {t:?} is not a status")
                })
        })
    };
    let body = |b: &Option<ExtAuthzRequestBody>| {
        b.as_ref().map(|b| BodySettings {
            max_request_bytes: b.max_request_bytes,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        })
    };
    if let Some(grpc) = &provider.envoy_ext_authz_grpc {
        return Ok(Settings {
            name: name.clone(),
            protocol: Protocol::Grpc,
            service: grpc.service.clone(),
            port: port(grpc.port)?,
            timeout: timeout(grpc.timeout.as_deref())?,
            fail_open: grpc.fail_open,
            status_on_error: status(grpc.status_on_error.as_deref())?,
            clear_route_cache: grpc.clear_route_cache,
            body: body(&grpc.include_request_body_in_check),
        });
    }
    if let Some(http) = &provider.envoy_ext_authz_http {
        // `includeHeadersInCheck` is deprecated: used only without its replacement.
        let include = if http.include_request_headers_in_check.is_empty() {
            http.include_headers_in_check.clone()
        } else {
            http.include_request_headers_in_check.clone()
        };
        return Ok(Settings {
            name: name.clone(),
            protocol: Protocol::Http(HttpSettings {
                path_prefix: http.path_prefix.clone().unwrap_or_default(),
                include_request_headers: include,
                additional_headers: http
                    .include_additional_headers_in_check
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                headers_to_upstream_on_allow: http.headers_to_upstream_on_allow.clone(),
                headers_to_downstream_on_deny: http.headers_to_downstream_on_deny.clone(),
                headers_to_downstream_on_allow: http.headers_to_downstream_on_allow.clone(),
            }),
            service: http.service.clone(),
            port: port(http.port)?,
            timeout: timeout(http.timeout.as_deref())?,
            fail_open: http.fail_open,
            status_on_error: status(http.status_on_error.as_deref())?,
            clear_route_cache: http.clear_route_cache,
            body: body(&http.include_request_body_in_check),
        });
    }
    Err(format!(
        "extension provider {name} is not an ext-authz provider (envoyExtAuthzGrpc or \
         envoyExtAuthzHttp)"
    ))
}

/// Where a provider's service runs.
#[derive(Clone, Debug)]
pub enum ProviderService {
    /// A Kubernetes Service: its ClusterIP, or its endpoints.
    Service(Arc<Service>),
    /// A ServiceEntry: reached in plain TCP, at these `host:port` targets (IP addresses of
    /// its endpoints, or a name to resolve).
    External(Vec<(String, u16)>),
}

/// The service of `settings` in the registry, as Istio's `LookupCluster` finds it.
pub fn provider_service(
    snapshot: &Snapshot,
    settings: &Settings,
) -> Result<ProviderService, String> {
    let (namespace, host) = service_hostname(&settings.service);
    if let Some(service) = snapshot.service_by_host(host)
        && namespace.is_none_or(|ns| ns == service.namespace)
    {
        if service.port(settings.port).is_none() {
            return Err(format!(
                "extension provider {}: service {host} has no port {}",
                settings.name, settings.port
            ));
        }
        return Ok(ProviderService::Service(service.clone()));
    }
    let entries: Vec<&Arc<ServiceEntry>> = snapshot
        .service_entries_for_host(host)
        .iter()
        .filter(|e| namespace.is_none_or(|ns| e.metadata.namespace.as_deref() == Some(ns)))
        .collect();
    match entries.as_slice() {
        [entry] => external_targets(entry, host, settings.port)
            .map(ProviderService::External)
            .ok_or_else(|| {
                format!(
                    "extension provider {}: ServiceEntry {host} has no port {}",
                    settings.name, settings.port
                )
            }),
        [] => Err(format!(
            "extension provider {}: no Service or ServiceEntry {} in the registry",
            settings.name, settings.service
        )),
        _ => Err(format!(
            "extension provider {}: {host} is defined in several namespaces; name it as \
             <namespace>/<hostname>",
            settings.name
        )),
    }
}

/// The addresses of a ServiceEntry's port `port`: its endpoints (by the port's name), or
/// the host itself for DNS resolution.
fn external_targets(entry: &ServiceEntry, host: &str, port: u16) -> Option<Vec<(String, u16)>> {
    let service_port = entry
        .spec
        .ports
        .iter()
        .find(|p| p.number == u32::from(port))?;
    let target = service_port
        .target_port
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(port);
    let endpoints: Vec<(String, u16)> = entry
        .spec
        .endpoints
        .iter()
        .filter_map(|e| {
            let address = e.address.clone()?;
            let port = e
                .ports
                .get(&service_port.name)
                .and_then(|p| u16::try_from(*p).ok())
                .unwrap_or(target);
            Some((address, port))
        })
        .collect();
    if !endpoints.is_empty() {
        return Some(endpoints);
    }
    match entry.spec.resolution.unwrap_or_default() {
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::None => {
            Some(vec![(host.to_string(), target)])
        }
        Resolution::Static => Some(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshConfig {
        serde_yaml::from_str(yaml).expect("mesh config")
    }

    #[test]
    fn settings_take_istio_defaults() {
        let m = mesh(
            r#"
extensionProviders:
- name: grpc
  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000}
- name: http
  envoyExtAuthzHttp:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 2s
    failOpen: true
    statusOnError: "503"
    pathPrefix: /check
    includeHeadersInCheck: [x-old]
    includeAdditionalHeadersInCheck: {x-b: "2", x-a: "1"}
    headersToUpstreamOnAllow: [x-ext-authz-check-result]
- name: zipkin
  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}
"#,
        );
        let grpc = provider_settings(&m, "grpc").expect("grpc");
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.timeout, DEFAULT_TIMEOUT);
        assert_eq!((grpc.fail_open, grpc.status_on_error), (false, 403));
        let http = provider_settings(&m, "http").expect("http");
        assert_eq!(http.hostname(), "ext-authz.foo.svc.cluster.local");
        assert_eq!(http.timeout, Duration::from_secs(2));
        assert_eq!((http.fail_open, http.status_on_error), (true, 503));
        let Protocol::Http(h) = http.protocol else {
            panic!("not HTTP");
        };
        assert_eq!(h.path_prefix, "/check");
        assert_eq!(
            h.include_request_headers,
            ["x-old"],
            "deprecated field used alone"
        );
        assert_eq!(
            h.additional_headers,
            [
                ("x-a".to_string(), "1".to_string()),
                ("x-b".into(), "2".into())
            ]
        );
        let unknown = provider_settings(&m, "opa").expect_err("unknown");
        assert!(unknown.contains("grpc, http"), "{unknown}");
        assert!(provider_settings(&m, "zipkin").is_err());
    }

    #[test]
    fn services_are_found_as_istio_finds_them() {
        let snapshot = crate::testing::snapshot_of(
            r#"
apiVersion: v1
kind: Service
metadata: {name: ext-authz, namespace: foo}
spec: {clusterIP: 10.96.0.50, ports: [{name: grpc, port: 9000}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: opa, namespace: bar}
spec:
  hosts: [opa.example.com]
  ports: [{number: 9191, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.10, ports: {grpc: 19191}}]
"#,
        );
        let settings = |service: &str, port| Settings::grpc("p", service, port);
        assert!(matches!(
            provider_service(
                &snapshot,
                &settings("ext-authz.foo.svc.cluster.local", 9000)
            ),
            Ok(ProviderService::Service(_))
        ));
        assert!(matches!(
            provider_service(
                &snapshot,
                &settings("foo/ext-authz.foo.svc.cluster.local", 9000)
            ),
            Ok(ProviderService::Service(_))
        ));
        assert!(
            provider_service(
                &snapshot,
                &settings("bar/ext-authz.foo.svc.cluster.local", 9000)
            )
            .is_err()
        );
        assert!(
            provider_service(
                &snapshot,
                &settings("ext-authz.foo.svc.cluster.local", 9001)
            )
            .is_err()
        );
        let Ok(ProviderService::External(targets)) =
            provider_service(&snapshot, &settings("opa.example.com", 9191))
        else {
            panic!("not external");
        };
        assert_eq!(targets, [("192.0.2.10".to_string(), 19191)]);
        assert!(provider_service(&snapshot, &settings("nowhere.example.com", 9191)).is_err());
    }
}
