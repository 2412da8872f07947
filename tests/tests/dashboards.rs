//! The shipped Grafana dashboards and PodMonitors, without a lab: each dashboard imports
//! (Grafana's JSON model with the `${datasource}` variable), every query reads only metrics
//! weft exports and variables the dashboard defines, and the PodMonitors select the pods
//! weft's manifests and waypoint controller label. What the queries answer is checked on
//! the lab against a real Prometheus (`tests/tests/prometheus.rs`).
use std::collections::BTreeSet;

use weft_core::metrics::{HttpRequestRecord, Metrics};
use weft_e2e::dashboards::{self, BUILTINS};

/// The series names weft's metrics registry exposes: every family's `# TYPE` line, with
/// the suffixes Prometheus gives counters and histograms.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new();
    // A connection, a request and a build line, so that every family has its TYPE line however the
    // encoder treats families without series.
    metrics.set_build("ztunnel", "test");
    let labels = weft_core::metrics::ConnectionLabels::new(weft_core::metrics::Reporter::Waypoint);
    let connection = metrics.tcp_opened(&labels);
    connection.sent(1);
    connection.received(1);
    drop(connection);
    metrics.http_request(
        &labels,
        &HttpRequestRecord {
            status: 200,
            grpc_status: None,
            duration: std::time::Duration::from_millis(1),
            request_bytes: 1,
            response_bytes: 1,
        },
    );
    let mut names = BTreeSet::new();
    for line in metrics.encode().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_dashboards_are_grafana_json_with_a_datasource_variable() {
    let all = dashboards::all();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["weft-mesh.json", "weft-service.json", "weft-workload.json"]
    );
    let mut uids = BTreeSet::new();
    for (name, dashboard) in &all {
        assert!(
            dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion"
        );
        assert!(
            uids.insert(dashboard["uid"].as_str().expect("a uid").to_string()),
            "{name}: uid used twice"
        );
        assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            dashboard["templating"]["list"]
                .as_array()
                .expect("templating.list")
                .iter()
                .any(|v| v["name"] == "datasource"
                    && v["type"] == "datasource"
                    && v["query"] == "prometheus"),
            "{name}: a Prometheus data source variable"
        );
        let panels = dashboards::panels(dashboard);
        assert!(panels.len() >= 8, "{name}: {} panels", panels.len());
        let mut ids = BTreeSet::new();
        for panel in &panels {
            let p = &panel.json;
            assert!(
                ids.insert(p["id"].as_u64()),
                "{name}: id of {}",
                panel.title
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some(),
                "{name}: {}",
                panel.title
            );
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                panel.title
            );
            for target in p["targets"].as_array().expect("targets") {
                assert_eq!(target["datasource"]["uid"], "${datasource}");
                assert!(target["refId"].is_string());
            }
        }
    }
}

#[test]
fn every_query_reads_metrics_weft_exports_and_variables_the_dashboard_defines() {
    let exported = exported();
    assert!(exported.contains("istio_requests_total"), "{exported:?}");
    assert!(
        exported.contains("istio_request_bytes_bucket"),
        "{exported:?}"
    );
    let mut read = BTreeSet::new();
    for (name, dashboard) in dashboards::all() {
        let defined: BTreeSet<String> = dashboards::variables(&dashboard)
            .into_iter()
            .map(|(n, _)| n)
            .chain(BUILTINS.iter().map(|b| b.to_string()))
            .collect();
        let queries = dashboards::panels(&dashboard)
            .into_iter()
            .flat_map(|p| p.exprs.into_iter().map(move |e| (p.title.clone(), e)))
            .chain(
                dashboards::variables(&dashboard)
                    .into_iter()
                    .filter_map(|(n, q)| Some((format!("variable {n}"), q?))),
            );
        for (title, expr) in queries {
            let metrics = dashboards::metric_names(&expr);
            assert!(
                !metrics.is_empty(),
                "{name}: {title}: reads no metric: {expr}"
            );
            for metric in metrics {
                assert!(
                    exported.contains(&metric),
                    "{name}: {title}: {metric} is not a metric weft exports: {expr}"
                );
                read.insert(metric);
            }
            for variable in dashboards::used_variables(&expr) {
                assert!(
                    defined.contains(&variable),
                    "{name}: {title}: ${variable} is not defined: {expr}"
                );
            }
            let depth = expr.chars().try_fold(0i32, |d, c| {
                let d = d + i32::from(c == '(') - i32::from(c == ')');
                (d >= 0).then_some(d)
            });
            assert_eq!(depth, Some(0), "{name}: {title}: parentheses: {expr}");
            assert_eq!(
                expr.matches('{').count(),
                expr.matches('}').count(),
                "{name}: {title}: braces: {expr}"
            );
        }
    }
    // The standard dashboards' metrics are all shown somewhere.
    for metric in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_bytes_bucket",
        "istio_response_bytes_bucket",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_connections_opened_total",
    ] {
        assert!(read.contains(metric), "no panel shows {metric}");
    }
}

fn observability(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/observability")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_podmonitors_select_weft_pods_by_the_labels_they_carry() {
    let monitors = observability("podmonitors.yaml");
    // The agent's DaemonSet labels its pods so, and announces the port and path.
    let agent = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/agent.yaml"),
    )
    .expect("deploy/base/agent.yaml");
    assert!(agent.contains("app.kubernetes.io/name: weft-agent"));
    assert!(monitors.contains("app.kubernetes.io/name: weft-agent"));
    for annotation in [
        "prometheus_io_scrape",
        "prometheus_io_port",
        "prometheus_io_path",
    ] {
        assert!(
            monitors.contains(&format!("__meta_kubernetes_pod_annotation_{annotation}")),
            "{annotation}"
        );
    }
    // What the waypoint and gateway controllers label their pods with.
    for class in weft_controller::class::Class::ALL {
        assert!(
            monitors.contains(class.managed_value()),
            "no PodMonitor selects {}",
            class.managed_value()
        );
    }
    assert!(monitors.contains(weft_controller::class::MANAGED_LABEL));
    assert_eq!(monitors.matches("kind: PodMonitor").count(), 3);
    // The kustomization ships every dashboard.
    let kustomization = observability("kustomization.yaml");
    for (name, _) in dashboards::all() {
        assert!(
            kustomization.contains(&format!("dashboards/{name}")),
            "{name} is not in deploy/observability/kustomization.yaml"
        );
    }
}
