//! `istio.v1.auth.IstioCertificateService`, written by hand from `core/proto/ca.proto` (no
//! protoc here): the prost messages and the tonic client and server, shaped as tonic's code
//! generator would emit them.
use std::sync::Arc;

use tonic::codegen::BoxFuture;

use crate::grpc::{UnaryClient, UnaryHandler, UnaryMethod, UnaryServer};

pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// The metadata key under which a node agent names the identity it requests for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded certificate request.
    #[prost(string, tag = "1")]
    pub csr: ::prost::alloc::string::String,
    /// Requested validity in seconds; 0 for the CA's default.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    #[prost(message, optional, tag = "4")]
    pub metadata: ::core::option::Option<::prost_types::Struct>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates: leaf first, root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: ::prost::alloc::vec::Vec<::prost::alloc::string::String>,
}

impl IstioCertificateRequest {
    /// The string value of a metadata field, if present and a string.
    pub fn metadata_string(&self, key: &str) -> Option<&str> {
        match self.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
            ::prost_types::value::Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// Sets a string metadata field.
    pub fn set_metadata_string(&mut self, key: &str, value: &str) {
        self.metadata
            .get_or_insert_with(Default::default)
            .fields
            .insert(
                key.to_owned(),
                ::prost_types::Value {
                    kind: Some(::prost_types::value::Kind::StringValue(value.to_owned())),
                },
            );
    }
}

/// `CreateCertificate`, the service's one method.
#[derive(Debug)]
pub struct CreateCertificate;

impl UnaryMethod for CreateCertificate {
    const SERVICE: &'static str = SERVICE_NAME;
    const METHOD: &'static str = "CreateCertificate";
    const PATH: &'static str = CREATE_CERTIFICATE_PATH;
    type Request = IstioCertificateRequest;
    type Response = IstioCertificateResponse;
    const PEER: &'static str = "the CA";
}

/// The server side: what a CA implements.
pub trait IstioCertificateService: Send + Sync + 'static {
    fn create_certificate(
        self: Arc<Self>,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<tonic::Response<IstioCertificateResponse>, tonic::Status>;
}

impl<T: IstioCertificateService> UnaryHandler<CreateCertificate> for T {
    fn call(
        self: Arc<Self>,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        self.create_certificate(request)
    }
}

/// A tower service routing gRPC requests to an [`IstioCertificateService`], for
/// `tonic::transport::Server::add_service`.
pub type IstioCertificateServiceServer<T> = UnaryServer<CreateCertificate, T>;

/// The client side of the service.
pub type IstioCertificateServiceClient<T> = UnaryClient<CreateCertificate, T>;

impl<T> UnaryClient<CreateCertificate, T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    pub async fn create_certificate(
        &mut self,
        request: impl tonic::IntoRequest<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        self.call(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The bytes protoc-generated code produces for these values of ca.proto's fields: tag
    /// numbers and wire types must match Istio's definition exactly.
    #[test]
    fn request_wire_encoding_matches_istio_proto() {
        let mut request = IstioCertificateRequest {
            csr: "x".to_owned(),
            validity_duration: 5,
            metadata: None,
        };
        request.set_metadata_string(IMPERSONATED_IDENTITY, "id");
        let key = IMPERSONATED_IDENTITY.as_bytes();
        let value = [0x1a, 0x02, b'i', b'd']; // Value.string_value = 3, length-delimited
        let mut entry = vec![0x0a, key.len() as u8]; // map entry key = 1
        entry.extend_from_slice(key);
        entry.extend_from_slice(&[0x12, value.len() as u8]); // map entry value = 2
        entry.extend_from_slice(&value);
        let mut fields = vec![0x0a, entry.len() as u8]; // Struct.fields = 1
        fields.extend_from_slice(&entry);
        let mut expected = vec![0x0a, 0x01, b'x']; // csr = 1, string
        expected.extend_from_slice(&[0x18, 0x05]); // validity_duration = 3, varint
        expected.extend_from_slice(&[0x22, fields.len() as u8]); // metadata = 4, message
        expected.extend_from_slice(&fields);
        assert_eq!(request.encode_to_vec(), expected);
        let back = IstioCertificateRequest::decode(expected.as_slice()).expect("decodes");
        assert_eq!(back.metadata_string(IMPERSONATED_IDENTITY), Some("id"));
    }

    #[test]
    fn response_wire_encoding_matches_istio_proto() {
        let response = IstioCertificateResponse {
            cert_chain: vec!["a".to_owned(), "bc".to_owned()],
        };
        assert_eq!(
            response.encode_to_vec(),
            vec![0x0a, 0x01, b'a', 0x0a, 0x02, b'b', b'c']
        );
    }
}
