//! TokenReview against a fixture API server speaking the real HTTP exchange
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`), alone and behind the CA's gRPC
//! service.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::metadata::MetadataMap;
use weft_ca::token_review::TokenReviewAuthenticator;
use weft_config::registry::Registry;
use weft_core::ca::{
    AuthError, Authenticator, CaConfig, CaServer, CaService, Caller, CertificateAuthority,
    GrpcIssuer, GrpcIssuerConfig,
};
use weft_core::identity::{CertificateInfo, CertificateRequest, Identity, WorkloadKey};

const AGENT: &str = "system:serviceaccount:weft-system:weft-agent";
const WAYPOINT: &str = "system:serviceaccount:shop:waypoint";
const TRUST_DOMAIN: &str = "cluster.local";
/// The audience of the kubelet's default token (the API server's issuer).
const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Answers a TokenReview as the API server would for a few known tokens.
async fn review(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let token = sent["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let wanted: Vec<String> = sent["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|| vec![API_SERVER_AUDIENCE.to_string()]);
    // What the API server does: a token is valid only for the audiences it was made for;
    // the answer lists those of the requested ones it matched.
    let made_for = match token.as_str() {
        "default-audience-token" => API_SERVER_AUDIENCE,
        _ => "istio-ca",
    };
    if !wanted.iter().any(|w| w == made_for) && token != "audience-unaware-token" {
        return Ok(json_response(
            &path,
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "metadata": {}, "spec": sent["spec"], "status": {"authenticated": false,
                "error": format!("token audiences [{made_for}] is invalid for the target audiences {wanted:?}")}}),
        ));
    }
    let confirmed = if token == "audience-unaware-token" {
        serde_json::json!([])
    } else {
        serde_json::json!([made_for])
    };
    let mut status = match token.as_str() {
        "node-1-token" => serde_json::json!({"authenticated": true, "user": {"username": AGENT,
            "extra": {"authentication.kubernetes.io/node-name": ["node-1"]}}}),
        // A pod's token on 1.30+: it names the pod and its node. Naming a node does not make
        // a waypoint a node agent.
        "waypoint-token" => {
            serde_json::json!({"authenticated": true, "user": {"username": WAYPOINT,
            "extra": {"authentication.kubernetes.io/pod-name": ["waypoint-7d4f9-x2x8q"],
                      "authentication.kubernetes.io/node-name": ["node-1"]}}})
        }
        // The token of a service-account Secret: no pod.
        "waypoint-secret-token" => {
            serde_json::json!({"authenticated": true, "user": {"username": WAYPOINT}})
        }
        "intruder-token" => {
            serde_json::json!({"authenticated": true, "user": {"username": "system:serviceaccount:default:sleep",
            "extra": {"authentication.kubernetes.io/pod-name": ["sleep-1"],
                      "authentication.kubernetes.io/node-name": ["node-1"]}}})
        }
        "user-token" => serde_json::json!({"authenticated": true, "user": {"username": "alice",
            "groups": ["system:authenticated"]}}),
        "unbound-token" => serde_json::json!({"authenticated": true, "user": {"username": AGENT}}),
        // A workload's pod-bound token, valid for the API server only, or from an
        // authenticator that does not report audiences.
        "default-audience-token" | "audience-unaware-token" => {
            serde_json::json!({"authenticated": true, "user": {"username": WAYPOINT,
            "extra": {"authentication.kubernetes.io/pod-name": ["waypoint-7d4f9-x2x8q"]}}})
        }
        _ => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    if status["authenticated"] == true {
        status["audiences"] = confirmed;
    }
    let answer = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "metadata": {}, "spec": sent["spec"], "status": status,
    });
    Ok(json_response(&path, answer))
}

fn json_response(path: &str, answer: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    if path != "/apis/authentication.k8s.io/v1/tokenreviews" {
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
    }
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn fixture() -> kube::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper::service::service_fn(review))
                    .await;
            });
        }
    });
    let config = kube::Config::new(format!("http://{address}").parse().expect("uri"));
    kube::Client::try_from(config).expect("client")
}

async fn authenticator() -> TokenReviewAuthenticator {
    TokenReviewAuthenticator::new(
        fixture().await,
        vec![AGENT.into()],
        Registry::new(Default::default()),
        TRUST_DOMAIN,
        vec![weft_ca::token_review::DEFAULT_AUDIENCE.into()],
    )
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).expect("valid")
}

fn bearer(token: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    metadata
}

#[tokio::test]
async fn an_agents_bound_token_names_its_node() {
    let auth = authenticator().await;
    let caller = auth
        .authenticate(&bearer("node-1-token"))
        .await
        .expect("authenticated");
    assert_eq!(caller, Caller::node("node-1"));
}

#[tokio::test]
async fn a_workloads_bound_token_names_its_own_identity() {
    let auth = authenticator().await;
    assert_eq!(
        auth.authenticate(&bearer("waypoint-token"))
            .await
            .expect("authenticated"),
        Caller::workload(id("shop", "waypoint"))
    );
    assert_eq!(
        auth.authenticate(&bearer("intruder-token"))
            .await
            .expect("authenticated"),
        Caller::workload(id("default", "sleep")),
        "any service account is a workload for its own identity, never its node"
    );
}

#[tokio::test]
async fn other_tokens_are_refused_with_the_reason() {
    let auth = authenticator().await;
    assert!(matches!(
        auth.authenticate(&bearer("forged")).await,
        Err(AuthError::UnknownToken)
    ));
    let user = auth
        .authenticate(&bearer("user-token"))
        .await
        .expect_err("not a service account");
    assert!(
        user.to_string()
            .contains("alice is neither a node agent's nor a workload's service account"),
        "{user}"
    );
    let secret = auth
        .authenticate(&bearer("waypoint-secret-token"))
        .await
        .expect_err("no pod");
    assert!(
        secret
            .to_string()
            .contains("the token of system:serviceaccount:shop:waypoint is not bound to a pod"),
        "{secret}"
    );
    let unbound = auth
        .authenticate(&bearer("unbound-token"))
        .await
        .expect_err("no node");
    assert!(
        unbound.to_string().contains("not bound to a pod"),
        "{unbound}"
    );
    assert!(matches!(
        auth.authenticate(&MetadataMap::new()).await,
        Err(AuthError::Missing)
    ));
}

#[tokio::test]
async fn a_token_not_made_for_the_ca_is_refused() {
    let auth = authenticator().await;
    assert!(
        matches!(
            auth.authenticate(&bearer("default-audience-token")).await,
            Err(AuthError::UnknownToken)
        ),
        "the kubelet's default token is for the API server, not the CA"
    );
    let unaware = auth
        .authenticate(&bearer("audience-unaware-token"))
        .await
        .expect_err("no audience confirmed");
    assert!(
        unaware
            .to_string()
            .contains("the API server did not confirm the token's audience"),
        "{unaware}"
    );

    // Configured with no audiences, the CA accepts what the API server itself would.
    let lenient = TokenReviewAuthenticator::new(
        fixture().await,
        vec![AGENT.into()],
        Registry::new(Default::default()),
        TRUST_DOMAIN,
        Vec::new(),
    );
    assert_eq!(
        lenient
            .authenticate(&bearer("default-audience-token"))
            .await
            .expect("the API server's own audience"),
        Caller::workload(id("shop", "waypoint"))
    );
}

/// The CA's gRPC service behind TokenReview, on a plaintext loopback port; node-1 runs
/// shop/web.
async fn serve_ca() -> (GrpcIssuerConfig, tokio::task::JoinHandle<()>) {
    let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).expect("CA"));
    let may_issue =
        |node: &str, identity: &Identity| node == "node-1" && *identity == id("shop", "web");
    let service = CaService::new(ca, Arc::new(authenticator().await), Arc::new(may_issue));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        CaServer::plaintext(service)
            .serve(listener, std::future::pending())
            .await
            .expect("serves");
    });
    (GrpcIssuerConfig::new(address.to_string()), server)
}

fn issuer(config: &GrpcIssuerConfig, token: &str) -> GrpcIssuer {
    GrpcIssuer::new(GrpcIssuerConfig {
        token: Some(token.to_owned()),
        ..config.clone()
    })
    .expect("issuer")
}

/// A request as `GrpcIssuer` sends it: `identity` in `ImpersonatedIdentity`, a CSR naming
/// `csr_names`.
fn request(identity: &Identity, csr_names: &Identity) -> CertificateRequest {
    CertificateRequest {
        identity: identity.clone(),
        csr_pem: WorkloadKey::generate()
            .expect("key")
            .csr_pem(csr_names)
            .expect("csr"),
        validity: Duration::from_secs(3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waypoint_obtains_its_own_identity_and_no_other() {
    let (config, server) = serve_ca().await;
    let waypoint = issuer(&config, "waypoint-token");
    let own = id("shop", "waypoint");
    let chain = waypoint
        .create_certificate(&request(&own, &own))
        .await
        .expect("its own identity");
    let leaf = CertificateInfo::parse(&chain[0]).expect("leaf");
    assert_eq!(leaf.identities, vec![own.clone()]);

    // Not the identity of a pod on the node its token names.
    let status = waypoint
        .create_certificate(&request(&id("shop", "web"), &id("shop", "web")))
        .await
        .expect_err("not its identity");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "spiffe://cluster.local/ns/shop/sa/waypoint may obtain only its own identity, \
         not spiffe://cluster.local/ns/shop/sa/web"
    );
    // Nor its own with a CSR naming another.
    let status = waypoint
        .create_certificate(&request(&own, &id("shop", "web")))
        .await
        .expect_err("the CSR names another identity");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("must name exactly its identity")
            && status
                .message()
                .contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{status:?}"
    );
    // A token bound to no pod obtains nothing.
    let status = issuer(&config, "waypoint-secret-token")
        .create_certificate(&request(&own, &own))
        .await
        .expect_err("unbound");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_still_obtains_its_nodes_pods_identities_only() {
    let (config, server) = serve_ca().await;
    let agent = issuer(&config, "node-1-token");
    let web = id("shop", "web");
    let chain = agent
        .create_certificate(&request(&web, &web))
        .await
        .expect("a pod of node-1");
    let leaf = CertificateInfo::parse(&chain[0]).expect("leaf");
    assert_eq!(leaf.identities, vec![web]);

    let status = agent
        .create_certificate(&request(&id("shop", "waypoint"), &id("shop", "waypoint")))
        .await
        .expect_err("no such pod on node-1");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "node node-1 may not obtain spiffe://cluster.local/ns/shop/sa/waypoint: \
         no pod with that identity is scheduled on it"
    );
    server.abort();
}
