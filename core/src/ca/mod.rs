//! weft's certificate authority and Istio's certificate API.
//!
//! - [`CertificateAuthority`]: signs CSRs into SPIFFE workload certificates, from a root
//!   generated in-process (the embedded default) or read from PEM files. It is also a
//!   [`crate::identity::CertificateIssuer`] for an agent running the CA in-process.
//! - [`CaService`] / [`CaServer`]: `istio.v1.auth.IstioCertificateService/CreateCertificate`
//!   over gRPC, with an [`Authenticator`] (per-node bearer tokens here, TokenReview in
//!   weft-ca) that names the [`Caller`]: a node obtains only identities of its own pods (as
//!   [`NodeIdentities`] says), a workload only its own identity.
//! - [`GrpcIssuer`]: the client, a `CertificateIssuer` for agents using a remote CA.
//! - [`root_dir`]: a generated root kept on disk, so a restarted CA keeps its root.
pub mod auth;
pub mod authority;
pub mod client;
pub mod proto;
pub mod root_dir;
pub mod server;

pub use auth::{
    AuthError, Authenticator, Caller, Forbidden, NodeIdentities, NodeTokenAuthenticator,
};
pub use authority::{CaConfig, CaError, CertificateAuthority, GeneratedRoot};
pub use client::{
    CaClient, CaClientFiles, CaClientFilesError, CaClientTls, DEFAULT_CA_SERVER_NAME, GrpcIssuer,
    GrpcIssuerConfig, GrpcIssuerError,
};
pub use server::{CaServeError, CaServer, CaService};
