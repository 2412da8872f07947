//! Which AuthorizationPolicies the waypoint enforces: those attached to it or to the
//! service being called with `targetRefs`, as Istio ambient's waypoints do. Policies with
//! a `selector` are the destination agent's (L4).
//!
//! And enforcing them in Istio's order, on each HTTP request ([`authorize`]) and each TCP
//! stream ([`authorize_stream`]):
//! 1. CUSTOM: if a CUSTOM policy's rules match, its extension provider is asked
//!    (`crate::ext_authz`); its denial is the client's answer (status, headers, body); its
//!    allow may change the request's headers and query, and add headers to the response.
//!    A provider that cannot be used denies (fail closed), as Istio's "bad CUSTOM action".
//!    On a TCP stream only a gRPC provider can check (Envoy's network filter); an HTTP one
//!    refuses the stream.
//! 2. AUDIT: the policies whose rules match are recorded (`weft_core::audit`), with the
//!    decision; a request CUSTOM denied never gets here, as in Envoy's filter chain.
//! 3. DENY, then ALLOW, on the request as CUSTOM left it.
use std::sync::Arc;

use super::metered::Incoming;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use tracing::{debug, info, warn};
use weft_config::api::common::PolicyTargetReference;
use weft_config::api::security::AuthorizationPolicy;
use weft_config::authn::Authenticated;
use weft_config::authz::Custom;
use weft_config::authz::Decision;
use weft_config::authz::l4::{self, L4Request};
use weft_config::authz::l7::{self, L7Request};
use weft_config::registry::Snapshot;
use weft_core::audit::AuditRecord;
use weft_core::ext_authz::{
    BodySettings, CheckBody, Denied, HeaderMutation, HttpAttributes, PeerInfo, Verdict,
    apply_mutations,
};

use super::body::RequestBody;
use super::local::{self, ResponseBody};
use crate::context::WaypointContext;
use crate::downstream::{Downstream, Target};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const NETWORKING_GROUP: &str = "networking.istio.io";

/// Whether a policy's `targetRef` names the ServiceEntry of `host` (Istio's kind
/// ServiceEntry, group networking.istio.io).
pub fn names_service_entry(
    r: &PolicyTargetReference,
    policy_ns: &str,
    host: &weft_config::registry::model::EntryHost,
) -> bool {
    r.group == NETWORKING_GROUP
        && r.kind == "ServiceEntry"
        && r.name == host.name
        && r.namespace.as_deref().unwrap_or(policy_ns) == host.namespace
}

pub fn policies<'s>(
    snapshot: &'s Snapshot,
    ctx: &WaypointContext,
    target: &Target,
) -> Vec<&'s Arc<AuthorizationPolicy>> {
    let attached_to_me = |r: &PolicyTargetReference, policy_ns: &str| {
        r.group == GATEWAY_GROUP
            && r.kind == "Gateway"
            && r.name == ctx.name
            && r.namespace.as_deref().unwrap_or(policy_ns) == ctx.namespace
    };
    let attached_to_service = |r: &PolicyTargetReference, policy_ns: &str| match target {
        Target::Service { service, .. } => {
            r.group.is_empty()
                && r.kind == "Service"
                && r.name == service.name
                && r.namespace.as_deref().unwrap_or(policy_ns) == service.namespace
        }
        Target::EntryHost { host, .. } => names_service_entry(r, policy_ns, host),
        Target::Workload { .. } | Target::Gateway(_) => false,
    };
    let mut namespaces = vec![ctx.namespace.as_str()];
    match target {
        Target::Service { service, .. } if service.namespace != ctx.namespace => {
            namespaces.push(service.namespace.as_str());
        }
        Target::EntryHost { host, .. } if host.namespace != ctx.namespace => {
            namespaces.push(host.namespace.as_str());
        }
        _ => {}
    }
    let mut found: Vec<&'s Arc<AuthorizationPolicy>> = namespaces
        .into_iter()
        .flat_map(|ns| snapshot.authorization_policies(ns).iter())
        .filter(|policy| {
            let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            let refs = policy
                .spec
                .target_ref
                .iter()
                .chain(policy.spec.target_refs.iter());
            refs.into_iter()
                .any(|r| attached_to_me(r, policy_ns) || attached_to_service(r, policy_ns))
        })
        .collect();
    // An ingress gateway is a workload too: policies selecting its pod (the root
    // namespace's and its own namespace's, `selector` or none) apply to it, as to Istio's.
    if let Target::Gateway(gateway) = target
        && let Some(workload) = &gateway.workload
    {
        found.extend(snapshot.authorization_policies_for(workload));
    }
    found
}

/// The request body: untouched, or read (in part) for the provider.
pub enum PendingBody {
    Incoming(Incoming),
    Read(RequestBody),
}

impl PendingBody {
    pub async fn into_request_body(self) -> Result<RequestBody, hyper::Error> {
        match self {
            PendingBody::Incoming(body) => RequestBody::read(body).await,
            PendingBody::Read(body) => Ok(body),
        }
    }
}

/// What an authorized request carries on.
pub struct Authorized {
    pub body: PendingBody,
    /// The provider's headers for the client's response.
    pub response_headers: Vec<HeaderMutation>,
    /// The request as routes match it, when the provider changed it and its
    /// `clearRouteCache` is false (Envoy chose the route before the check).
    pub routing: Option<(Uri, HeaderMap)>,
}

impl Authorized {
    fn plain(body: Incoming) -> Self {
        Self {
            body: PendingBody::Incoming(body),
            response_headers: Vec::new(),
            routing: None,
        }
    }
}

fn principal(down: &Downstream) -> Option<&str> {
    down.source
        .principal
        .as_deref()
        .map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
}

fn l7_request<'a>(
    down: &'a Downstream,
    parts: &'a Parts,
    auth: Option<&'a Authenticated>,
) -> L7Request<'a> {
    let mut request =
        L7Request::from_parts(parts, principal(down), down.source_ip, down.target.port());
    request.remote_ip = down.source_ip;
    request.destination_ip = Some(down.destination.ip());
    request.auth = auth;
    request
}

fn destination_name(target: &Target) -> String {
    match target {
        Target::Service { service, .. } => format!("{}/{}", service.namespace, service.name),
        Target::EntryHost { host, .. } => format!("{}/{}", host.namespace, host.name),
        Target::Workload { workload, .. } => {
            format!("{}/{}", workload.namespace, workload.name)
        }
        Target::Gateway(gateway) => gateway.server.clone(),
    }
}

fn peers(ctx: &WaypointContext, snapshot: &Snapshot, down: &Downstream) -> (PeerInfo, PeerInfo) {
    let labels = down
        .source_ip
        .and_then(|ip| snapshot.workload_by_ip(ip))
        .filter(|w| down.source.principal.as_deref() == Some(&*w.identity))
        .map(|w| w.labels.to_map())
        .unwrap_or_default();
    let source = PeerInfo {
        address: down.source_ip.map(|ip| std::net::SocketAddr::new(ip, 0)),
        principal: down.source.principal.clone(),
        labels,
    };
    // Envoy names its own certificate's identity as the destination principal.
    let destination = PeerInfo {
        address: Some(down.destination),
        principal: Some(ctx.identity.to_string()),
        labels: Default::default(),
    };
    (source, destination)
}

/// Logged once per reason and configuration version: every request would repeat it.
fn warn_once(snapshot: &Snapshot, reason: &str) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<(u64, String)>>> = OnceLock::new();
    let mut seen = weft_core::sync::lock(SEEN.get_or_init(Default::default));
    if seen.len() > 1024 {
        seen.clear();
    }
    if seen.insert((snapshot.version(), reason.to_string())) {
        warn!(%reason, "CUSTOM AuthorizationPolicy cannot be honoured; denying what it covers");
    }
}

/// A CUSTOM denial, reported with Envoy's `UAEX`.
fn unauthorized_external(response: Response<ResponseBody>) -> Response<ResponseBody> {
    local::flagged(
        response,
        weft_core::metrics::ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE,
    )
}

/// The answer a client gets when the provider denies.
fn denied_response(denied: &Denied) -> Response<ResponseBody> {
    let mut response = Response::new(local::full(denied.body.clone()));
    *response.status_mut() = StatusCode::from_u16(denied.status).unwrap_or(StatusCode::FORBIDDEN);
    apply_mutations(response.headers_mut(), &denied.headers);
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    if !denied.body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// The body the provider gets, read from the client up to `maxRequestBytes`; a larger
/// body without `allowPartialMessage` is answered 413, as Envoy's buffer limit answers.
async fn body_for_check(
    body: Incoming,
    settings: BodySettings,
) -> Result<(CheckBody, RequestBody), Response<ResponseBody>> {
    let max = usize::try_from(settings.max_request_bytes).unwrap_or(usize::MAX);
    let mut body = body;
    let mut data = bytes::BytesMut::new();
    loop {
        if data.len() > max {
            if !settings.allow_partial_message {
                return Err(local::reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Payload Too Large",
                ));
            }
            let head = data.freeze();
            let check = CheckBody {
                bytes: head.slice(..max.min(head.len())),
                partial: true,
            };
            return Ok((check, RequestBody::resumed(head, body)));
        }
        match body.frame().await {
            None => {
                let data = data.freeze();
                let check = CheckBody {
                    bytes: data.clone(),
                    partial: false,
                };
                return Ok((check, RequestBody::complete(data, None)));
            }
            Some(Err(_)) => {
                return Err(local::reply(StatusCode::BAD_REQUEST, "bad request body"));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    let data = data.freeze();
                    let check = CheckBody {
                        bytes: data.clone(),
                        partial: false,
                    };
                    return Ok((check, RequestBody::complete(data, trailers)));
                }
            },
        }
    }
}

/// CUSTOM, AUDIT, DENY and ALLOW for one HTTP request; `Err` is the answer of a denied
/// one. `parts` is changed as the provider asks.
pub async fn authorize(
    ctx: &WaypointContext,
    snapshot: &Snapshot,
    down: &Downstream,
    parts: &mut Parts,
    auth: Option<&Authenticated>,
    body: Incoming,
) -> Result<Authorized, Response<ResponseBody>> {
    let policies = policies(snapshot, ctx, &down.target);
    if policies.is_empty() {
        return Ok(Authorized::plain(body));
    }
    let custom = l7::custom(&policies, &l7_request(down, parts, auth));
    let authorized = match custom {
        Custom::Skip => Authorized::plain(body),
        Custom::Deny(reason) => {
            warn_once(snapshot, &reason);
            return Err(unauthorized_external(local::forbidden()));
        }
        Custom::Check { provider, policies } => {
            let client = match crate::ext_authz::client(ctx, snapshot, &provider) {
                Ok(client) => client,
                Err(reason) => {
                    warn_once(
                        snapshot,
                        &format!("AuthorizationPolicy {}: {reason}", policies.join(", ")),
                    );
                    return Err(unauthorized_external(local::forbidden()));
                }
            };
            let (check_body, body) = match client.settings().body {
                Some(settings) => {
                    let (check, read) = body_for_check(body, settings).await?;
                    (Some(check), PendingBody::Read(read))
                }
                None => (None, PendingBody::Incoming(body)),
            };
            // Envoy gives every request an id before its filters run; the check carries it.
            if !parts.headers.contains_key(super::request_id::X_REQUEST_ID) {
                parts.headers.insert(
                    super::request_id::X_REQUEST_ID,
                    super::request_id::request_id(),
                );
            }
            let (source, destination) = peers(ctx, snapshot, down);
            let path = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
            let host = l7_request(down, parts, auth).host.to_string();
            let attributes = HttpAttributes {
                source,
                destination,
                method: parts.method.as_str(),
                path: &path,
                host: &host,
                scheme: if down.secure { "https" } else { "http" },
                version: parts.version,
                headers: &parts.headers,
                body: check_body,
            };
            match client.check_http(&attributes).await {
                Verdict::Deny(denied) => {
                    info!(
                        provider = %provider,
                        status = denied.status,
                        reason = %denied.reason,
                        path = parts.uri.path(),
                        "request denied by external authorization"
                    );
                    return Err(unauthorized_external(denied_response(&denied)));
                }
                Verdict::Allow(allowed) => {
                    if let Some(reason) = &allowed.failed_open {
                        warn!(
                            provider = %provider,
                            %reason,
                            "external authorization failed; allowed (failOpen)"
                        );
                    }
                    let mut routing = None;
                    if allowed.changes_request() {
                        if !client.settings().clear_route_cache {
                            routing = Some((parts.uri.clone(), parts.headers.clone()));
                        }
                        allowed.apply_to_request(&mut parts.headers, &mut parts.uri);
                    }
                    Authorized {
                        body,
                        response_headers: allowed.downstream,
                        routing,
                    }
                }
            }
        }
    };
    let request = l7_request(down, parts, auth);
    let audited = l7::audited(&policies, &request);
    let decision = l7::evaluate(&policies, &request);
    if !audited.is_empty() {
        let mut record = AuditRecord::now("waypoint", "http", audited);
        record.source_principal = down.source.principal.clone();
        record.source_ip = down.source_ip;
        record.destination = Some(down.destination);
        record.destination_name = Some(destination_name(&down.target));
        record.method = Some(parts.method.to_string());
        record.host = Some(request.host.to_string());
        record.path = Some(parts.uri.path().to_string());
        let denied = match &decision {
            Decision::Deny(reason) => Some(reason.as_str()),
            Decision::Allow => None,
        };
        record.decided(denied).log();
    }
    if let Decision::Deny(reason) = decision {
        debug!(%reason, path = parts.uri.path(), "request denied");
        return Err(local::forbidden());
    }
    Ok(authorized)
}

/// CUSTOM (gRPC providers only), AUDIT, DENY and ALLOW for a TCP stream, with what an L4
/// proxy knows; `Err` says why it is refused (the stream is then closed).
pub async fn authorize_stream(
    ctx: &WaypointContext,
    snapshot: &Snapshot,
    down: &Downstream,
) -> Result<(), String> {
    let policies = policies(snapshot, ctx, &down.target);
    if policies.is_empty() {
        return Ok(());
    }
    let request = L4Request {
        principal: principal(down).map(str::to_string),
        source_ip: down.source_ip,
        destination_ip: down.destination.ip(),
        destination_port: down.target.port(),
    };
    match l4::custom(&policies, &request) {
        Custom::Skip => {}
        Custom::Deny(reason) => {
            warn_once(snapshot, &reason);
            return Err(reason);
        }
        Custom::Check { provider, policies } => {
            let client = crate::ext_authz::client(ctx, snapshot, &provider).map_err(|reason| {
                let reason = format!("AuthorizationPolicy {}: {reason}", policies.join(", "));
                warn_once(snapshot, &reason);
                reason
            })?;
            let (source, destination) = peers(ctx, snapshot, down);
            match client.check_network(&source, &destination).await {
                Verdict::Deny(denied) => {
                    if matches!(
                        client.settings().protocol,
                        weft_core::ext_authz::Protocol::Http(_)
                    ) {
                        warn_once(snapshot, &denied.reason);
                    }
                    return Err(denied.reason);
                }
                Verdict::Allow(allowed) => {
                    if let Some(reason) = &allowed.failed_open {
                        warn!(provider = %provider, %reason, "external authorization failed; allowed (failOpen)");
                    }
                }
            }
        }
    }
    let audited = l4::audited(&policies, &request);
    let decision = l4::evaluate(&policies, &request);
    if !audited.is_empty() {
        let mut record = AuditRecord::now("waypoint", "tcp", audited);
        record.source_principal = down.source.principal.clone();
        record.source_ip = down.source_ip;
        record.destination = Some(down.destination);
        record.destination_name = Some(destination_name(&down.target));
        let denied = match &decision {
            Decision::Deny(reason) => Some(reason.as_str()),
            Decision::Allow => None,
        };
        record.decided(denied).log();
    }
    match decision {
        Decision::Allow => Ok(()),
        Decision::Deny(reason) => Err(reason),
    }
}

/// Applies the provider's response headers to the client's answer.
pub fn finish(response_headers: &[HeaderMutation], headers: &mut HeaderMap) {
    apply_mutations(headers, response_headers);
}
