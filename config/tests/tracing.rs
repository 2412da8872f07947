//! Tracing from the mesh config as a cluster holds it: the provider `defaultProviders`
//! names, found in the registry as Istio finds it; what weft cannot use is warned about by
//! field, what istiod refuses is refused.
use std::path::PathBuf;
use std::sync::Arc;

use weft_config::registry::{Change, Registry};
use weft_config::source::yaml;
use weft_config::trace_settings::{TracingSettings, collector_address};

fn apply(text: &str) -> (Registry, Vec<String>) {
    let documents = yaml::parse(text, Arc::new(PathBuf::from("test.yaml"))).expect("YAML");
    assert!(documents.errors.is_empty(), "{:?}", documents.errors);
    let registry = Registry::default();
    let report = registry.apply(documents.candidates.into_iter().map(Change::Apply));
    let refused = report.refused.iter().map(|r| format!("{r:?}")).collect();
    (registry, refused)
}

fn warnings(registry: &Registry) -> Vec<String> {
    registry
        .snapshot()
        .warnings()
        .map(|w| format!("{}: {}", w.field, w.reason))
        .collect()
}

fn mesh_config(mesh: &str) -> String {
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{indented}"
    )
}

const COLLECTORS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: observability}
---
apiVersion: v1
kind: Service
metadata: {name: zipkin, namespace: observability}
spec: {clusterIP: 10.96.0.41, ports: [{name: http, port: 9411}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: otel, namespace: observability}
spec:
  hosts: [otel.example.com]
  ports: [{number: 4317, name: grpc, protocol: GRPC}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.7}]
"#;

#[test]
fn the_default_provider_is_found_in_the_registry() {
    let (registry, refused) = apply(&format!(
        "{COLLECTORS}---\n{}",
        mesh_config(
            "extensionProviders:\n- name: zipkin\n  zipkin: {service: observability/zipkin.observability.svc.cluster.local, port: 9411}\n- name: otel\n  opentelemetry: {service: otel.example.com, port: 4317}\ndefaultProviders:\n  tracing: [zipkin]\ndefaultConfig:\n  tracing: {sampling: 10}\n"
        )
    ));
    assert!(refused.is_empty(), "{refused:?}");
    let snapshot = registry.snapshot();
    let settings = TracingSettings::from_mesh(snapshot.mesh_config());
    assert_eq!(settings.random_sampling_percentage, 10.0);
    let zipkin = settings.provider.expect("zipkin");
    assert_eq!(
        collector_address(&snapshot, &zipkin).as_deref(),
        Ok("10.96.0.41:9411")
    );
    let mut otel = zipkin.clone();
    otel.collector = weft_config::trace_settings::Collector::Service("otel.example.com".into());
    otel.port = 4317;
    assert_eq!(
        collector_address(&snapshot, &otel).as_deref(),
        Ok("192.0.2.7:4317")
    );
    otel.collector = weft_config::trace_settings::Collector::Service("nowhere.example.com".into());
    assert!(collector_address(&snapshot, &otel).is_err());
    assert_eq!(warnings(&registry), Vec::<String>::new());
}

#[test]
fn what_weft_does_not_use_is_warned_about_by_field() {
    let (registry, refused) = apply(&format!(
        "{COLLECTORS}---\n{}",
        mesh_config(
            r#"extensionProviders:
- name: otel
  opentelemetry:
    service: otel.example.com
    port: 4317
    resourceDetectors: {environment: {}}
    grpc: {initialMetadata: [{name: x-key, envName: KEY}]}
- name: gone
  zipkin: {service: gone.example.com, port: 9411}
defaultProviders:
  tracing: [otel, gone]
enableTracing: true
defaultConfig:
  discoveryAddress: istiod:15012
  tracing:
    sampling: 120
    zipkin: {address: zipkin:9411}
    lightstep: {address: x:1}
    custmTags: {}
    customTags:
      both: {literal: {value: a}, header: {name: b}}
"#
        )
    ));
    assert!(refused.is_empty(), "{refused:?}");
    let found = warnings(&registry);
    let root = "data.mesh";
    for expected in [
        format!(
            "{root}.extensionProviders[0].opentelemetry.grpc.initialMetadata[0]: weft's proxies cannot read istiod's environment: this header is not sent"
        ),
        format!(
            "{root}.extensionProviders[0].opentelemetry.resourceDetectors: weft does not act on this field; it has no effect"
        ),
        format!(
            "{root}.extensionProviders[1].zipkin.service: \"gone.example.com\" names no known Service or ServiceEntry host: spans are not exported until it exists"
        ),
        format!(
            "{root}.defaultProviders.tracing[1]: only the first tracing provider is used (as in Istio)"
        ),
        format!(
            "{root}.defaultConfig.discoveryAddress: weft does not act on this field; it has no effect"
        ),
        format!(
            "{root}.defaultConfig.tracing.sampling: 120 is not a percentage from 0 to 100: Istio's default, 1%, is used"
        ),
        format!(
            "{root}.defaultConfig.tracing.customTags.both: needs exactly one of literal, environment, header (has 2): not added"
        ),
        format!(
            "{root}.defaultConfig.tracing.custmTags: not a field of Istio's ProxyConfig.Tracing (misspelt?); ignored"
        ),
        format!(
            "{root}.defaultConfig.tracing.lightstep: weft does not act on this field; it has no effect"
        ),
        format!(
            "{root}.defaultConfig.tracing.zipkin: not used: defaultProviders.tracing names the provider (as in Istio)"
        ),
    ] {
        assert!(
            found.contains(&expected),
            "missing {expected}\nin {found:#?}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|w| w.contains("enableTracing") || w.contains("defaultProviders.tracing[0]")),
        "acted on: {found:#?}"
    );
}

#[test]
fn a_default_provider_weft_cannot_export_to_is_warned_about() {
    let (registry, _) = apply(&mesh_config(
        "extensionProviders:\n- name: dd\n  datadog: {service: dd.example.com, port: 8126}\ndefaultProviders:\n  tracing: [dd]\n",
    ));
    let found = warnings(&registry);
    assert!(
        found.contains(&"data.mesh.defaultProviders.tracing[0]: \"dd\" is not a zipkin or opentelemetry provider, the tracing providers weft exports to: nothing is traced".to_owned()),
        "{found:#?}"
    );
    let (registry, _) = apply(&mesh_config("defaultProviders:\n  tracing: [missing]\n"));
    assert!(
        warnings(&registry).contains(&"data.mesh.defaultProviders.tracing[0]: names no extension provider \"missing\": nothing is traced".to_owned())
    );
}

#[test]
fn tracing_providers_without_service_or_port_are_refused() {
    let (_, refused) = apply(&mesh_config(
        "extensionProviders:\n- name: z\n  zipkin: {port: 70000, timeout: soon}\n",
    ));
    let text = refused.join("\n");
    assert!(
        text.contains("extensionProviders[0].zipkin.service"),
        "{text}"
    );
    assert!(text.contains("extensionProviders[0].zipkin.port"), "{text}");
    assert!(
        text.contains("extensionProviders[0].zipkin.timeout"),
        "{text}"
    );
}
