//! `istio.v1.auth.IstioCertificateService`, written by hand from `core/proto/ca.proto` (no
//! protoc here): the prost messages and the tonic client and server, shaped as tonic's code
//! generator would emit them.
use std::sync::Arc;

use tonic::codegen::{Body, BoxFuture, Bytes, Context, GrpcMethod, Poll, Service, StdError, http};

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

type ProstCodec = tonic_prost::ProstCodec<IstioCertificateResponse, IstioCertificateRequest>;

/// The server side of the service: what a CA implements.
pub trait IstioCertificateService: Send + Sync + 'static {
    fn create_certificate(
        self: Arc<Self>,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> BoxFuture<tonic::Response<IstioCertificateResponse>, tonic::Status>;
}

/// A tower service routing gRPC requests to an [`IstioCertificateService`], for
/// `tonic::transport::Server::add_service`.
#[derive(Debug)]
pub struct IstioCertificateServiceServer<T> {
    inner: Arc<T>,
}

impl<T> IstioCertificateServiceServer<T> {
    pub fn new(inner: T) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    pub fn from_arc(inner: Arc<T>) -> Self {
        Self { inner }
    }
}

impl<T> Clone for IstioCertificateServiceServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct CreateCertificateSvc<T>(Arc<T>);

impl<T: IstioCertificateService> tonic::server::UnaryService<IstioCertificateRequest>
    for CreateCertificateSvc<T>
{
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        Arc::clone(&self.0).create_certificate(request)
    }
}

impl<T, B> Service<http::Request<B>> for IstioCertificateServiceServer<T>
where
    T: IstioCertificateService,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            CREATE_CERTIFICATE_PATH => {
                let inner = Arc::clone(&self.inner);
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                    Ok(grpc.unary(CreateCertificateSvc(inner), req).await)
                })
            }
            _ => Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            }),
        }
    }
}

impl<T> tonic::server::NamedService for IstioCertificateServiceServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The client side of the service.
#[derive(Debug, Clone)]
pub struct IstioCertificateServiceClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> IstioCertificateServiceClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    pub async fn create_certificate(
        &mut self,
        request: impl tonic::IntoRequest<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, tonic::Status> {
        self.inner.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("the CA is not reachable: {}", e.into()))
        })?;
        let codec =
            tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default();
        let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH);
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE_NAME, "CreateCertificate"));
        self.inner.unary(request, path, codec).await
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
