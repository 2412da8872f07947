//! `envoy.service.auth.v3.Authorization/Check`, the subset weft sends and reads, written by
//! hand with prost's derive (no protoc here). Field numbers and types are those of Envoy's
//! `envoy/service/auth/v3/{external_auth,attribute_context}.proto`,
//! `envoy/config/core/v3/{address,base}.proto`, `envoy/type/v3/http_status.proto` and
//! `google/rpc/status.proto`; fields weft never sends or reads (metadata contexts, dynamic
//! metadata, status details) are left out, which protobuf allows: a server's unknown
//! fields are skipped.
use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::codegen::BoxFuture;

use crate::grpc::{UnaryClient, UnaryHandler, UnaryMethod, UnaryServer};

pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

// --- envoy.service.auth.v3

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    #[prost(btree_map = "string, string", tag = "10")]
    pub context_extensions: BTreeMap<String, String>,
    #[prost(message, optional, tag = "12")]
    pub tls_session: Option<TlsSession>,
}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub labels: BTreeMap<String, String>,
    /// The SPIFFE id, `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
    #[prost(string, tag = "4")]
    pub principal: String,
    #[prost(string, tag = "5")]
    pub certificate: String,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Request {
    #[prost(message, optional, tag = "1")]
    pub time: Option<::prost_types::Timestamp>,
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub method: String,
    /// Lower-case names; several values of one name joined by `,`.
    #[prost(btree_map = "string, string", tag = "3")]
    pub headers: BTreeMap<String, String>,
    /// The request target: path and query, as sent.
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    #[prost(string, tag = "6")]
    pub scheme: String,
    /// Always empty (the query is in `path`), as Envoy sends it.
    #[prost(string, tag = "7")]
    pub query: String,
    #[prost(string, tag = "8")]
    pub fragment: String,
    /// The body's size, -1 when unknown.
    #[prost(int64, tag = "9")]
    pub size: i64,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    #[prost(string, tag = "10")]
    pub protocol: String,
    #[prost(string, tag = "11")]
    pub body: String,
    #[prost(bytes = "vec", tag = "12")]
    pub raw_body: Vec<u8>,
}

/// `AttributeContext.TLSSession`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TlsSession {
    #[prost(string, tag = "1")]
    pub sni: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, repeated, tag = "5")]
    pub headers_to_remove: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[prost(message, repeated, tag = "7")]
    pub query_parameters_to_set: Vec<QueryParameter>,
    #[prost(string, repeated, tag = "8")]
    pub query_parameters_to_remove: Vec<String>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(oneof = "check_response::HttpResponse", tags = "2, 3, 5")]
    pub http_response: Option<check_response::HttpResponse>,
}

pub mod check_response {
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum HttpResponse {
        #[prost(message, tag = "2")]
        DeniedResponse(super::DeniedHttpResponse),
        #[prost(message, tag = "3")]
        OkResponse(super::OkHttpResponse),
        /// The server failed: weft answers as for any failure (`failOpen`,
        /// `statusOnError`), with this status, headers and body where given.
        #[prost(message, tag = "5")]
        ErrorResponse(super::DeniedHttpResponse),
    }
}

// --- envoy.config.core.v3

/// `Address`: only its `socket_address` (field 1 of the oneof) is ever sent.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SocketAddress {
    /// `TCP` = 0.
    #[prost(int32, tag = "1")]
    pub protocol: i32,
    #[prost(string, tag = "2")]
    pub address: String,
    /// `port_value`, of the `port_specifier` oneof.
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    /// Deprecated `google.protobuf.BoolValue append`; when set it decides.
    #[prost(message, optional, tag = "2")]
    pub append: Option<bool>,
    /// `HeaderAppendAction`: 0 `APPEND_IF_EXISTS_OR_ADD`, 1 `ADD_IF_ABSENT`,
    /// 2 `OVERWRITE_IF_EXISTS_OR_ADD`, 3 `OVERWRITE_IF_EXISTS`.
    #[prost(int32, tag = "3")]
    pub append_action: i32,
    #[prost(bool, tag = "4")]
    pub keep_empty_value: bool,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct QueryParameter {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

// --- envoy.type.v3

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct HttpStatus {
    /// `StatusCode`: the HTTP status itself (`Forbidden` = 403); 0 is `Empty`.
    #[prost(int32, tag = "1")]
    pub code: i32,
}

// --- google.rpc

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code`: 0 is `OK`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `Check`, the service's one method.
#[derive(Debug)]
pub struct Check;

impl UnaryMethod for Check {
    const SERVICE: &'static str = SERVICE_NAME;
    const METHOD: &'static str = "Check";
    const PATH: &'static str = CHECK_PATH;
    type Request = CheckRequest;
    type Response = CheckResponse;
    const PEER: &'static str = "the external authorization service";
}

/// The server side, for tests that need an authorization service in-process.
pub trait Authorization: Send + Sync + 'static {
    fn check(
        self: Arc<Self>,
        request: tonic::Request<CheckRequest>,
    ) -> BoxFuture<tonic::Response<CheckResponse>, tonic::Status>;
}

impl<T: Authorization> UnaryHandler<Check> for T {
    fn call(
        self: Arc<Self>,
        request: tonic::Request<CheckRequest>,
    ) -> BoxFuture<tonic::Response<CheckResponse>, tonic::Status> {
        self.check(request)
    }
}

pub type AuthorizationServer<T> = UnaryServer<Check, T>;
pub type AuthorizationClient<T> = UnaryClient<Check, T>;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The bytes protoc-generated code produces for these values: tag numbers and wire
    /// types must be Envoy's.
    #[test]
    fn check_request_wire_encoding_matches_envoy_proto() {
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(Address {
                        socket_address: Some(SocketAddress {
                            protocol: 0,
                            address: "a".into(),
                            port_value: 1,
                        }),
                    }),
                    principal: "p".into(),
                    ..Peer::default()
                }),
                request: Some(Request {
                    time: None,
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        size: -1,
                        ..HttpRequest::default()
                    }),
                }),
                ..AttributeContext::default()
            }),
        };
        // SocketAddress: address = 2 "a", port_value = 3 varint 1.
        let socket = [0x12, 0x01, b'a', 0x18, 0x01];
        // Address.socket_address = 1; Peer.address = 1, principal = 4.
        let mut peer = vec![0x0a, 2 + socket.len() as u8, 0x0a, socket.len() as u8];
        peer.extend_from_slice(&socket);
        peer.extend_from_slice(&[0x22, 0x01, b'p']);
        // HttpRequest.method = 2 "GET", size = 9 varint -1 (ten bytes).
        let mut http = vec![0x12, 0x03, b'G', b'E', b'T', 0x48];
        http.extend_from_slice(&[0xff; 9]);
        http.push(0x01);
        // Request.http = 2; AttributeContext.source = 1, request = 4.
        let mut attributes = vec![0x0a, peer.len() as u8];
        attributes.extend_from_slice(&peer);
        attributes.extend_from_slice(&[0x22, 2 + http.len() as u8, 0x12, http.len() as u8]);
        attributes.extend_from_slice(&http);
        let mut expected = vec![0x0a, attributes.len() as u8];
        expected.extend_from_slice(&attributes);
        assert_eq!(request.encode_to_vec(), expected);
    }

    #[test]
    fn check_response_decodes_envoy_fields() {
        // status = 1 {code = 1 varint 7}; denied_response = 2 {status = 1 {code = 1 varint
        // 401}, headers = 2 {header = 1 {key = 1 "k", value = 2 "v"}, append = 2 {value = 1
        // false}}, body = 3 "no"}.
        let header = [
            0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x12, 0x02, 0x08, 0x00,
        ];
        let mut denied = vec![0x0a, 0x03, 0x08, 0x91, 0x03, 0x12, header.len() as u8];
        denied.extend_from_slice(&header);
        denied.extend_from_slice(&[0x1a, 0x02, b'n', b'o']);
        let mut bytes = vec![0x0a, 0x02, 0x08, 0x07, 0x12, denied.len() as u8];
        bytes.extend_from_slice(&denied);
        let response = CheckResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(response.status.as_ref().map(|s| s.code), Some(7));
        let Some(check_response::HttpResponse::DeniedResponse(denied)) = response.http_response
        else {
            panic!("not a denied response: {response:?}");
        };
        assert_eq!(denied.status.map(|s| s.code), Some(401));
        assert_eq!(denied.body, "no");
        assert_eq!(denied.headers[0].append, Some(false));
        assert_eq!(
            denied.headers[0].header.as_ref().map(|h| h.key.as_str()),
            Some("k")
        );
    }
}
