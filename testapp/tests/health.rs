//! Health for the kubelet's probes, as a kubelet would ask: `/healthz` over HTTP and
//! `grpc.health.v1.Health/Check` with tonic-health's client, made to fail and recover on
//! demand (`POST /control/health`).

mod common;

use common::{describe, free_port, json_lines, run, serve};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn healthz(http: u16) -> u64 {
    let out = run(&["get", &format!("http://127.0.0.1:{http}/healthz")]);
    assert!(out.status.success(), "{}", describe(&out));
    json_lines(&out)[0]["status"].as_u64().unwrap_or(0)
}

fn set(http: u16, state: &str) {
    let url = format!("http://127.0.0.1:{http}/control/health?state={state}");
    let out = run(&["get", "--method", "POST", &url]);
    assert_eq!(json_lines(&out)[0]["status"], 200, "{}", describe(&out));
}

fn grpc_status(port: u16) -> ServingStatus {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("gRPC connects");
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Check answers")
            .into_inner()
            .status()
    })
}

#[test]
fn health_fails_and_recovers_on_demand_over_http_and_grpc() {
    let (http, grpc) = (free_port(), free_port());
    let (_server, line) = serve(&[
        "--http-port",
        &http.to_string(),
        "--grpc-health-port",
        &grpc.to_string(),
    ]);
    assert_eq!(
        line,
        format!("listening http=[{http}] echo=[] sink=[] grpc=[{grpc}]")
    );
    assert_eq!(healthz(http), 200);
    assert_eq!(grpc_status(grpc), ServingStatus::Serving);

    set(http, "failing");
    assert_eq!(healthz(http), 503);
    assert_eq!(grpc_status(grpc), ServingStatus::NotServing);

    set(http, "serving");
    assert_eq!(healthz(http), 200);
    assert_eq!(grpc_status(grpc), ServingStatus::Serving);

    let bad = run(&[
        "get",
        "--method",
        "POST",
        &format!("http://127.0.0.1:{http}/control/health?state=sick"),
    ]);
    assert_eq!(json_lines(&bad)[0]["status"], 400, "{}", describe(&bad));
}

#[test]
fn unhealthy_starts_failing() {
    let http = free_port();
    let (_server, _) = serve(&["--http-port", &http.to_string(), "--unhealthy"]);
    assert_eq!(healthz(http), 503);
}
