//! One-method gRPC services (unary), client and server, for the hand-written protos in
//! `ca/proto.rs` and `telemetry/proto.rs` (there is no protoc here for tonic's generator).
//! A method is described once by a [`UnaryMethod`]; this module holds what tonic's
//! generated code would repeat for each.
use std::marker::PhantomData;
use std::sync::Arc;

use tonic::codegen::{Body, BoxFuture, Bytes, Context, GrpcMethod, Poll, Service, StdError, http};

/// One unary method of a gRPC service.
pub trait UnaryMethod: Send + Sync + 'static {
    /// `package.Service`.
    const SERVICE: &'static str;
    /// The method's name, as in `/package.Service/Method`.
    const METHOD: &'static str;
    /// `/package.Service/Method`.
    const PATH: &'static str;
    type Request: prost::Message + Default + Send + 'static;
    type Response: prost::Message + Default + Send + 'static;
    /// Said when the server cannot be reached (e.g. "the CA").
    const PEER: &'static str;
}

/// What serves a method: the service's implementation.
pub trait UnaryHandler<M: UnaryMethod>: Send + Sync + 'static {
    fn call(
        self: Arc<Self>,
        request: tonic::Request<M::Request>,
    ) -> BoxFuture<tonic::Response<M::Response>, tonic::Status>;
}

/// A tower service serving method `M` with `H`, for `tonic::transport::Server::add_service`;
/// every other path answers `UNIMPLEMENTED`.
pub struct UnaryServer<M, H> {
    handler: Arc<H>,
    _method: PhantomData<fn() -> M>,
}

impl<M, H> UnaryServer<M, H> {
    pub fn new(handler: H) -> Self {
        Self::from_arc(Arc::new(handler))
    }

    pub fn from_arc(handler: Arc<H>) -> Self {
        Self {
            handler,
            _method: PhantomData,
        }
    }
}

impl<M, H> Clone for UnaryServer<M, H> {
    fn clone(&self) -> Self {
        Self::from_arc(Arc::clone(&self.handler))
    }
}

impl<M, H> std::fmt::Debug for UnaryServer<M, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnaryServer").finish_non_exhaustive()
    }
}

struct Call<M, H>(Arc<H>, PhantomData<fn() -> M>);

impl<M: UnaryMethod, H: UnaryHandler<M>> tonic::server::UnaryService<M::Request> for Call<M, H> {
    type Response = M::Response;
    type Future = BoxFuture<tonic::Response<M::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<M::Request>) -> Self::Future {
        Arc::clone(&self.0).call(request)
    }
}

impl<M, H, B> Service<http::Request<B>> for UnaryServer<M, H>
where
    M: UnaryMethod,
    H: UnaryHandler<M>,
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
        if req.uri().path() == M::PATH {
            let handler = Arc::clone(&self.handler);
            return Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<M::Response, M::Request>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(Call::<M, H>(handler, PhantomData), req).await)
            });
        }
        Box::pin(async move {
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
        })
    }
}

impl<M: UnaryMethod, H> tonic::server::NamedService for UnaryServer<M, H> {
    const NAME: &'static str = M::SERVICE;
}

/// The client side of method `M`.
#[derive(Debug)]
pub struct UnaryClient<M, T> {
    inner: tonic::client::Grpc<T>,
    _method: PhantomData<fn() -> M>,
}

impl<M, T: Clone> Clone for UnaryClient<M, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _method: PhantomData,
        }
    }
}

impl<M, T> UnaryClient<M, T>
where
    M: UnaryMethod,
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
            _method: PhantomData,
        }
    }

    pub async fn call(
        &mut self,
        request: impl tonic::IntoRequest<M::Request>,
    ) -> Result<tonic::Response<M::Response>, tonic::Status> {
        self.inner.ready().await.map_err(|e| {
            tonic::Status::unavailable(format!("{} is not reachable: {}", M::PEER, e.into()))
        })?;
        let codec = tonic_prost::ProstCodec::<M::Request, M::Response>::default();
        let path = http::uri::PathAndQuery::from_static(M::PATH);
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(GrpcMethod::new(M::SERVICE, M::METHOD));
        self.inner.unary(request, path, codec).await
    }
}
