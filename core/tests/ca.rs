//! The CA over gRPC: issuing, authentication, authorization, CSR checks, roots from files.
mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use rustls::pki_types::UnixTime;
use tokio::net::TcpListener;
use tonic::Code;
use weft_core::ca::proto::{
    IMPERSONATED_IDENTITY, IstioCertificateRequest, IstioCertificateServiceClient,
};
use weft_core::ca::{
    AuthError, Authenticator, CaConfig, CaServer, CaService, Caller, CertificateAuthority,
    GeneratedRoot, GrpcIssuer, GrpcIssuerConfig, NodeTokenAuthenticator,
};
use weft_core::identity::{
    CertificateInfo, CertificateIssuer, CertificateRequest, IdentityError, IssueError, TrustBundle,
    WorkloadKey,
};

fn request_for(identity: &weft_core::identity::Identity) -> CertificateRequest {
    CertificateRequest {
        identity: identity.clone(),
        csr_pem: WorkloadKey::generate()
            .expect("key")
            .csr_pem(identity)
            .expect("csr"),
        validity: Duration::from_secs(3600),
    }
}

/// Checks a chain the way a peer would: leaf signed by the root, for client and server use.
fn assert_chains_to(chain: &[rustls::pki_types::CertificateDer<'static>], trust: &TrustBundle) {
    let leaf = rustls::server::ParsedCertificate::try_from(&chain[0]).expect("parsed leaf");
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &leaf,
        &trust.root_store(),
        &chain[1..chain.len() - 1],
        UnixTime::now(),
        weft_core::identity::crypto_provider()
            .signature_verification_algorithms
            .all,
    )
    .expect("the leaf chains to the trust bundle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_certificates_for_the_identities_of_each_nodes_pods() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let client = mesh
            .client_manager
            .fetch(&client_id())
            .await
            .expect("node-a obtains ns-a/client");
        let server = mesh
            .server_manager
            .fetch(&server_id())
            .await
            .expect("node-b obtains ns-b/server");
        for (cert, identity) in [(&client, client_id()), (&server, server_id())] {
            assert_eq!(cert.identity(), &identity);
            let info = CertificateInfo::parse(cert.leaf()).expect("leaf parses");
            assert_eq!(info.identities, vec![identity]);
            assert_chains_to(cert.chain(), &mesh.trust);
            let lifetime = cert
                .not_after()
                .duration_since(cert.not_before())
                .expect("ordered");
            assert_eq!(
                lifetime,
                Duration::from_secs(3600),
                "the requested validity"
            );
        }
        assert_ne!(client.serial(), server.serial());
        // Cached: asking again gives the same certificate, not a new one.
        let again = mesh
            .client_manager
            .fetch(&client_id())
            .await
            .expect("cached");
        assert_eq!(again.serial(), client.serial());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_of_another_nodes_pod_is_permission_denied() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let issuer = grpc_issuer(mesh.ca_addr, TOKEN_A, &mesh.trust);
        let status = issuer
            .create_certificate(&request_for(&server_id()))
            .await
            .expect_err("node-a may not obtain ns-b/server");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(NODE_A)
                && status.message().contains(&server_id().to_string()),
            "the reason names the node and the identity: {}",
            status.message()
        );
        // Through the issuer trait and the manager, the refusal stays a refusal.
        let err = issuer
            .issue(request_for(&server_id()))
            .await
            .expect_err("refused");
        assert!(matches!(err, IssueError::Refused { .. }), "{err:?}");
        let err = mesh
            .client_manager
            .fetch(&server_id())
            .await
            .expect_err("refused through the manager too");
        assert!(
            matches!(err, IdentityError::Issue(IssueError::Refused { .. })),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_node_token_is_unauthenticated() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let status = grpc_issuer(mesh.ca_addr, "not-a-node-token", &mesh.trust)
            .create_certificate(&request_for(&client_id()))
            .await
            .expect_err("unknown token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        let mut config = GrpcIssuerConfig::new(mesh.ca_addr.to_string());
        config.tls = Some(weft_core::ca::CaClientTls {
            trust: mesh.trust.clone().into(),
            server_name: CA_NAME.to_owned(),
        });
        let status = GrpcIssuer::new(config)
            .expect("issuer")
            .create_certificate(&request_for(&client_id()))
            .await
            .expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_read_again_for_every_request() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let dir = std::env::temp_dir().join(format!("weft-ca-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _cleanup = RemoveOnDrop(dir.clone());
        let token_file = dir.join("token");
        std::fs::write(&token_file, "expired-token\n").expect("write token");

        let mut config = GrpcIssuerConfig::new(mesh.ca_addr.to_string());
        config.token_file = Some(token_file.clone());
        config.tls = Some(weft_core::ca::CaClientTls {
            trust: mesh.trust.clone().into(),
            server_name: CA_NAME.to_owned(),
        });
        let issuer = GrpcIssuer::new(config).expect("issuer");
        let status = issuer
            .create_certificate(&request_for(&client_id()))
            .await
            .expect_err("the old token is unknown to the CA");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        // The kubelet rotates a projected token by swapping in a new file.
        let fresh = dir.join("token.new");
        std::fs::write(&fresh, format!("{TOKEN_A}\n")).expect("write token");
        std::fs::rename(&fresh, &token_file).expect("swap token");
        let chain = issuer
            .create_certificate(&request_for(&client_id()))
            .await
            .expect("the same issuer presents the rotated token");
        assert_chains_to(&chain, &mesh.trust);

        // A token file that went away is a retriable failure naming the file.
        std::fs::remove_file(&token_file).expect("remove token");
        let status = issuer
            .create_certificate(&request_for(&client_id()))
            .await
            .expect_err("no token file");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains(&token_file.display().to_string()),
            "{status:?}"
        );
    })
    .await;
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_csr_is_invalid_argument() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let issuer = grpc_issuer(mesh.ca_addr, TOKEN_A, &mesh.trust);
        let mut request = request_for(&client_id());
        request.csr_pem =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_owned();
        let status = issuer
            .create_certificate(&request)
            .await
            .expect_err("garbage CSR");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_certificate_is_verified_by_its_name() {
    bounded(async {
        let mesh = mesh(Duration::from_secs(3600)).await;
        let mut config = GrpcIssuerConfig::new(mesh.ca_addr.to_string());
        config.token = Some(TOKEN_A.to_owned());
        config.tls = Some(weft_core::ca::CaClientTls {
            trust: mesh.trust.clone().into(),
            server_name: "impostor.example".to_owned(),
        });
        let status = GrpcIssuer::new(config)
            .expect("issuer")
            .create_certificate(&request_for(&client_id()))
            .await
            .expect_err("the CA's certificate does not name impostor.example");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");

        // And a client trusting another root does not accept the CA at all.
        let other = CertificateAuthority::generate(CaConfig::default()).expect("other CA");
        let status = grpc_issuer(mesh.ca_addr, TOKEN_A, &other.trust_bundle())
            .create_certificate(&request_for(&client_id()))
            .await
            .expect_err("unknown root");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_from_pem_files_serves_plaintext_on_a_node_local_link() {
    bounded(async {
        init_tracing();
        let dir = std::env::temp_dir().join(format!(
            "weft-ca-test-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let root =
            GeneratedRoot::generate("cluster.local", Duration::from_secs(86_400)).expect("root");
        let (cert_path, key_path) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
        std::fs::write(&cert_path, &root.certificate_pem).expect("write cert");
        std::fs::write(&key_path, root.key_pem()).expect("write key");
        let loaded =
            CertificateAuthority::from_pem_files(&cert_path, &key_path, CaConfig::default());
        let trust = TrustBundle::from_pem(&std::fs::read_to_string(&cert_path).expect("read root"))
            .expect("trust bundle");
        std::fs::remove_dir_all(&dir).expect("clean up");
        let ca = Arc::new(loaded.expect("CA from files"));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = CaService::new(
            Arc::clone(&ca),
            Arc::new(NodeTokenAuthenticator::new([(NODE_A, TOKEN_A)])),
            Arc::new(may_issue),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(CaServer::plaintext(service).serve(listener, async {
            let _ = stopped.await;
        }));

        let mut config = GrpcIssuerConfig::new(addr.to_string());
        config.token = Some(TOKEN_A.to_owned());
        let issuer = GrpcIssuer::new(config).expect("issuer");
        let chain = issuer
            .create_certificate(&request_for(&client_id()))
            .await
            .expect("issued over plaintext");
        assert_chains_to(&chain, &trust);
        assert_eq!(
            chain.last().expect("root last"),
            &trust.certificates()[0],
            "the chain ends with the root from the file"
        );

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops on shutdown")
            .expect("task")
            .expect("served without error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_ca_is_an_issuer_for_the_embedded_default() {
    bounded(async {
        let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).expect("CA"));
        let manager = weft_core::identity::IdentityManager::new(
            Arc::clone(&ca) as Arc<dyn CertificateIssuer>,
            weft_core::identity::ManagerConfig::default(),
        );
        let cert = manager
            .fetch(&client_id())
            .await
            .expect("issued in-process");
        assert_chains_to(cert.chain(), &ca.trust_bundle());
        assert_eq!(manager.identities(), vec![client_id()]);
        manager.forget(&client_id());
        assert!(manager.current(&client_id()).is_none());
    })
    .await;
}

/// One token per caller: node-a's agent, and the workload shop/waypoint (as TokenReview
/// names the service account of a waypoint's token).
struct NodeOrWorkload(NodeTokenAuthenticator);

const WAYPOINT_TOKEN: &str = "token-of-the-waypoint";

impl Authenticator for NodeOrWorkload {
    fn authenticate<'a>(
        &'a self,
        metadata: &'a tonic::metadata::MetadataMap,
    ) -> weft_core::identity::BoxFuture<'a, Result<Caller, AuthError>> {
        match weft_core::ca::auth::bearer_token(metadata) {
            Ok(WAYPOINT_TOKEN) => Box::pin(std::future::ready(Ok(Caller::workload(id(
                "shop", "waypoint",
            ))))),
            _ => self.0.authenticate(metadata),
        }
    }
}

/// Istio's CreateCertificate as a workload (istio-agent, a waypoint) calls it: its own
/// identity in the CSR, with or without `ImpersonatedIdentity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_obtains_its_own_identity_only() {
    bounded(async {
        let ca = Arc::new(CertificateAuthority::generate(CaConfig::default()).expect("CA"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = CaService::new(
            Arc::clone(&ca),
            Arc::new(NodeOrWorkload(NodeTokenAuthenticator::new([(
                NODE_A, TOKEN_A,
            )]))),
            Arc::new(may_issue),
        );
        let server = tokio::spawn(async move {
            CaServer::plaintext(service)
                .serve(listener, std::future::pending())
                .await
                .expect("serves");
        });
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut client = IstioCertificateServiceClient::new(channel);
        let waypoint = id("shop", "waypoint");
        let call = |csr_names: &weft_core::identity::Identity, impersonated: Option<&str>| {
            let mut message = IstioCertificateRequest {
                csr: WorkloadKey::generate()
                    .expect("key")
                    .csr_pem(csr_names)
                    .expect("csr"),
                validity_duration: 3600,
                metadata: None,
            };
            if let Some(identity) = impersonated {
                message.set_metadata_string(IMPERSONATED_IDENTITY, identity);
            }
            let mut request = tonic::Request::new(message);
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {WAYPOINT_TOKEN}").parse().expect("ascii"),
            );
            request
        };
        let leaf_identities = |chain: &[String]| {
            use rustls::pki_types::pem::PemObject;
            let leaf = rustls::pki_types::CertificateDer::from_pem_slice(chain[0].as_bytes())
                .expect("pem");
            CertificateInfo::parse(&leaf).expect("leaf").identities
        };

        // As istio-agent asks: the CSR alone.
        let issued = client
            .create_certificate(call(&waypoint, None))
            .await
            .expect("its own identity")
            .into_inner();
        assert_eq!(leaf_identities(&issued.cert_chain), vec![waypoint.clone()]);
        // As GrpcIssuer asks: naming its own identity in ImpersonatedIdentity too.
        let issued = client
            .create_certificate(call(&waypoint, Some(&waypoint.to_string())))
            .await
            .expect("its own identity, impersonated")
            .into_inner();
        assert_eq!(leaf_identities(&issued.cert_chain), vec![waypoint.clone()]);

        for (csr_names, impersonated) in [
            // Another identity, even one of a pod on node-a.
            (client_id(), None),
            (client_id(), Some(client_id().to_string())),
            // Its own, with a CSR naming another.
            (client_id(), Some(waypoint.to_string())),
        ] {
            let status = client
                .create_certificate(call(&csr_names, impersonated.as_deref()))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(
                status.message().contains(&waypoint.to_string())
                    && status.message().contains(&client_id().to_string()),
                "the reason names both identities: {}",
                status.message()
            );
        }
        server.abort();
    })
    .await;
}
