//! TokenReview against a fixture API server speaking the real HTTP exchange
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`).
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataMap;
use weft_ca::token_review::TokenReviewAuthenticator;
use weft_config::registry::Registry;
use weft_core::ca::{AuthError, Authenticator};

const AGENT: &str = "system:serviceaccount:weft-system:weft-agent";

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
    let status = match token.as_str() {
        "node-1-token" => serde_json::json!({"authenticated": true, "user": {"username": AGENT,
            "extra": {"authentication.kubernetes.io/node-name": ["node-1"]}}}),
        "intruder-token" => {
            serde_json::json!({"authenticated": true, "user": {"username": "system:serviceaccount:default:sleep",
            "extra": {"authentication.kubernetes.io/node-name": ["node-1"]}}})
        }
        "unbound-token" => serde_json::json!({"authenticated": true, "user": {"username": AGENT}}),
        _ => serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let answer = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "metadata": {}, "spec": sent["spec"], "status": status,
    });
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    if path != "/apis/authentication.k8s.io/v1/tokenreviews" {
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
    }
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
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
    let auth = TokenReviewAuthenticator::new(
        fixture().await,
        vec![AGENT.into()],
        Registry::new(Default::default()),
    );
    let caller = auth
        .authenticate(&bearer("node-1-token"))
        .await
        .expect("authenticated");
    assert_eq!(caller.node, "node-1");
}

#[tokio::test]
async fn other_tokens_are_refused_with_the_reason() {
    let auth = TokenReviewAuthenticator::new(
        fixture().await,
        vec![AGENT.into()],
        Registry::new(Default::default()),
    );
    assert!(matches!(
        auth.authenticate(&bearer("forged")).await,
        Err(AuthError::UnknownToken)
    ));
    let intruder = auth
        .authenticate(&bearer("intruder-token"))
        .await
        .expect_err("not an agent");
    assert!(
        intruder
            .to_string()
            .contains("default:sleep is not a node agent"),
        "{intruder}"
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
