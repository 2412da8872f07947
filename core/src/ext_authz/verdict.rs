//! What a check decides and what it changes, as Envoy's ext_authz filters apply it; pure
//! functions of the service's answer.
//!
//! - gRPC: `status.code` OK allows, with `ok_response`'s header mutations for the upstream
//!   request (`headers`, `headers_to_remove`, query parameters) and the client's response
//!   (`response_headers_to_add`). Any other code denies with `denied_response`'s status
//!   (403 when unset), headers and body. An `error_response`, like a failed call, is a
//!   failure: `failOpen` allows, else the status is its own or `statusOnError`.
//! - A header option's deprecated `append` decides when set (request headers: true appends
//!   to the existing value, false overwrites; response headers: true adds another entry);
//!   otherwise `append_action`: APPEND_IF_EXISTS_OR_ADD adds an entry, ADD_IF_ABSENT,
//!   OVERWRITE_IF_EXISTS_OR_ADD, OVERWRITE_IF_EXISTS as named.
//! - Pseudo-headers and Host are never removed.
use bytes::Bytes;
use http::header::{HOST, HeaderName};
use http::{HeaderMap, HeaderValue, Uri};

use super::proto::{CheckResponse, DeniedHttpResponse, HeaderValueOption, check_response};
use super::settings::Settings;

/// The decision on one request or connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allowed),
    Deny(Denied),
}

/// What an allow changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Mutations of the request sent upstream.
    pub upstream: Vec<HeaderMutation>,
    /// Request headers to remove before it goes upstream.
    pub remove: Vec<HeaderName>,
    /// Mutations of the response the client gets.
    pub downstream: Vec<HeaderMutation>,
    pub query_set: Vec<(String, String)>,
    pub query_remove: Vec<String>,
    /// Allowed only because the service failed and `failOpen` is set.
    pub failed_open: Option<String>,
}

/// The response a denied client gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub status: u16,
    pub headers: Vec<HeaderMutation>,
    pub body: Bytes,
    /// For logs: the service's denial, or why the check failed.
    pub reason: String,
}

/// The service's answer before `failOpen` and `statusOnError` are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    Allow(Allowed),
    Deny(Denied),
    /// The service could not be asked, or failed; what it sent with its failure, if
    /// anything.
    Failed(Failure),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub status: Option<u16>,
    pub headers: Vec<HeaderMutation>,
    pub body: Bytes,
}

impl Failure {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            ..Self::default()
        }
    }
}

impl Settings {
    /// The verdict for a check's outcome: a failure allows with `failOpen`, else denies
    /// with `statusOnError` (or the status the failing service chose).
    pub fn decide(&self, checked: Checked) -> Verdict {
        match checked {
            Checked::Allow(allowed) => Verdict::Allow(allowed),
            Checked::Deny(denied) => Verdict::Deny(denied),
            Checked::Failed(failure) if self.fail_open => Verdict::Allow(Allowed {
                failed_open: Some(failure.reason),
                ..Allowed::default()
            }),
            Checked::Failed(failure) => Verdict::Deny(Denied {
                status: failure.status.unwrap_or(self.status_on_error),
                headers: failure.headers,
                body: failure.body,
                reason: format!(
                    "external authorization {} failed: {}",
                    self.name, failure.reason
                ),
            }),
        }
    }
}

/// How a header mutation applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutationAction {
    /// Joined to an existing value with `,`; added when absent.
    Append,
    /// Another entry of the name.
    Add,
    /// Replaces every value, or adds.
    Set,
    AddIfAbsent,
    OverwriteIfExists,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMutation {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub action: MutationAction,
}

impl HeaderMutation {
    pub fn new(name: HeaderName, value: HeaderValue, action: MutationAction) -> Self {
        Self {
            name,
            value,
            action,
        }
    }
}

/// A `HeaderValueOption` as a mutation; `None` for a name or value HTTP cannot carry.
fn mutation(option: &HeaderValueOption, response: bool) -> Option<HeaderMutation> {
    let header = option.header.as_ref()?;
    let name = HeaderName::from_bytes(header.key.as_bytes()).ok()?;
    let value = if header.value.is_empty() && !header.raw_value.is_empty() {
        HeaderValue::from_bytes(&header.raw_value).ok()?
    } else {
        HeaderValue::from_str(&header.value).ok()?
    };
    let action = match option.append {
        Some(true) if response => MutationAction::Add,
        Some(true) => MutationAction::Append,
        Some(false) => MutationAction::Set,
        None => match option.append_action {
            0 => MutationAction::Add,
            1 => MutationAction::AddIfAbsent,
            3 => MutationAction::OverwriteIfExists,
            // 2, and values Envoy does not know (it overwrites then too).
            _ => MutationAction::Set,
        },
    };
    Some(HeaderMutation::new(name, value, action))
}

fn mutations(options: &[HeaderValueOption], response: bool) -> Vec<HeaderMutation> {
    options
        .iter()
        .filter_map(|o| mutation(o, response))
        .collect()
}

fn denied_parts(denied: &DeniedHttpResponse) -> (Option<u16>, Vec<HeaderMutation>, Bytes) {
    let status = denied
        .status
        .as_ref()
        .and_then(|s| u16::try_from(s.code).ok())
        .filter(|code| (100..=599).contains(code));
    (
        status,
        mutations(&denied.headers, true),
        Bytes::from(denied.body.clone()),
    )
}

/// A gRPC `CheckResponse` at the HTTP filter.
pub fn grpc_checked(response: &CheckResponse) -> Checked {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    let message = response
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default();
    if code == 0 {
        let mut allowed = Allowed::default();
        if let Some(check_response::HttpResponse::OkResponse(ok)) = &response.http_response {
            allowed.upstream = mutations(&ok.headers, false);
            allowed.downstream = mutations(&ok.response_headers_to_add, true);
            allowed.remove = ok
                .headers_to_remove
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .filter(|h| h != HOST)
                .collect();
            allowed.query_set = ok
                .query_parameters_to_set
                .iter()
                .map(|q| (q.key.clone(), q.value.clone()))
                .collect();
            allowed.query_remove = ok.query_parameters_to_remove.clone();
        }
        return Checked::Allow(allowed);
    }
    match &response.http_response {
        Some(check_response::HttpResponse::ErrorResponse(error)) => {
            let (status, headers, body) = denied_parts(error);
            Checked::Failed(Failure {
                reason: format!("the service answered an error (code {code}) {message}"),
                status,
                headers,
                body,
            })
        }
        Some(check_response::HttpResponse::DeniedResponse(denied)) => {
            let (status, headers, body) = denied_parts(denied);
            Checked::Deny(Denied {
                status: status.unwrap_or(403),
                headers,
                body,
                reason: format!("denied by the service (code {code}) {message}"),
            })
        }
        _ => Checked::Deny(Denied {
            status: 403,
            headers: Vec::new(),
            body: Bytes::new(),
            reason: format!("denied by the service (code {code}) {message}"),
        }),
    }
}

/// A gRPC `CheckResponse` at the network (TCP) filter: only the status counts.
pub fn network_checked(response: &CheckResponse) -> Checked {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code == 0 {
        return Checked::Allow(Allowed::default());
    }
    let message = response
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .unwrap_or_default();
    if let Some(check_response::HttpResponse::ErrorResponse(_)) = &response.http_response {
        return Checked::Failed(Failure::new(format!(
            "the service answered an error (code {code}) {message}"
        )));
    }
    Checked::Deny(Denied {
        status: 403,
        headers: Vec::new(),
        body: Bytes::new(),
        reason: format!("denied by the service (code {code}) {message}"),
    })
}

/// Applies mutations in order.
pub fn apply_mutations(headers: &mut HeaderMap, mutations: &[HeaderMutation]) {
    for m in mutations {
        let present = headers.contains_key(&m.name);
        match m.action {
            MutationAction::Append if present => {
                let mut joined: Vec<u8> = Vec::new();
                for value in headers.get_all(&m.name) {
                    if !joined.is_empty() {
                        joined.push(b',');
                    }
                    joined.extend_from_slice(value.as_bytes());
                }
                joined.push(b',');
                joined.extend_from_slice(m.value.as_bytes());
                if let Ok(value) = HeaderValue::from_bytes(&joined) {
                    headers.insert(m.name.clone(), value);
                }
            }
            MutationAction::Append | MutationAction::Add => {
                headers.append(m.name.clone(), m.value.clone());
            }
            MutationAction::Set => {
                headers.insert(m.name.clone(), m.value.clone());
            }
            MutationAction::AddIfAbsent if !present => {
                headers.insert(m.name.clone(), m.value.clone());
            }
            MutationAction::OverwriteIfExists if present => {
                headers.insert(m.name.clone(), m.value.clone());
            }
            MutationAction::AddIfAbsent | MutationAction::OverwriteIfExists => {}
        }
    }
}

impl Allowed {
    /// Whether the request going upstream changes.
    pub fn changes_request(&self) -> bool {
        !self.upstream.is_empty()
            || !self.remove.is_empty()
            || !self.query_set.is_empty()
            || !self.query_remove.is_empty()
    }

    /// The upstream request's headers and target after the provider's changes.
    pub fn apply_to_request(&self, headers: &mut HeaderMap, uri: &mut Uri) {
        apply_mutations(headers, &self.upstream);
        for name in &self.remove {
            headers.remove(name);
        }
        if let Some(changed) = with_query(uri, &self.query_set, &self.query_remove) {
            *uri = changed;
        }
    }
}

/// `uri` with query parameters set (replacing the first of the name, dropping the others,
/// or added at the end) and removed; `None` when nothing changes.
pub fn with_query(uri: &Uri, set: &[(String, String)], remove: &[String]) -> Option<Uri> {
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    let mut pairs: Vec<(String, Option<String>)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (p.to_string(), None),
        })
        .collect();
    for (key, value) in set {
        match pairs.iter().position(|(k, _)| k == key) {
            Some(at) => {
                pairs[at].1 = Some(value.clone());
                let mut seen = false;
                pairs.retain(|(k, _)| {
                    if k != key {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => pairs.push((key.clone(), Some(value.clone()))),
        }
    }
    pairs.retain(|(k, _)| !remove.contains(k));
    let query: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
        .collect();
    let path_and_query = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), query.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext_authz::proto::{
        HeaderValue as ProtoHeader, HttpStatus, OkHttpResponse, QueryParameter, RpcStatus,
    };

    fn option(key: &str, value: &str, append: Option<bool>, action: i32) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(ProtoHeader {
                key: key.into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            append,
            append_action: action,
            keep_empty_value: false,
        }
    }

    fn status(code: i32) -> Option<RpcStatus> {
        Some(RpcStatus {
            code,
            message: String::new(),
        })
    }

    #[test]
    fn ok_responses_carry_their_mutations() {
        let response = CheckResponse {
            status: status(0),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    option("x-ext-authz-check-result", "allowed", None, 0),
                    option("x-user", "alice", Some(false), 0),
                    option("x-trace", "b", Some(true), 0),
                    option("x-once", "1", None, 1),
                    option("x-only", "1", None, 3),
                ],
                headers_to_remove: vec!["authorization".into(), "host".into()],
                response_headers_to_add: vec![option("x-seen", "1", Some(true), 0)],
                query_parameters_to_set: vec![QueryParameter {
                    key: "user".into(),
                    value: "alice".into(),
                }],
                query_parameters_to_remove: vec!["token".into()],
            })),
        };
        let Checked::Allow(allowed) = grpc_checked(&response) else {
            panic!("not allowed");
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("mallory"));
        headers.insert("x-trace", HeaderValue::from_static("a"));
        headers.insert("x-once", HeaderValue::from_static("0"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.insert(HOST, HeaderValue::from_static("svc"));
        let mut uri: Uri = "/items?token=t&x=1".parse().expect("uri");
        allowed.apply_to_request(&mut headers, &mut uri);
        assert_eq!(headers["x-ext-authz-check-result"], "allowed");
        assert_eq!(headers["x-user"], "alice", "append false overwrites");
        assert_eq!(headers["x-trace"], "a,b", "append true appends");
        assert_eq!(headers["x-once"], "0", "ADD_IF_ABSENT leaves it");
        assert!(
            !headers.contains_key("x-only"),
            "OVERWRITE_IF_EXISTS adds nothing"
        );
        assert!(!headers.contains_key("authorization"));
        assert_eq!(headers[HOST], "svc", "Host is never removed");
        assert_eq!(uri, "/items?x=1&user=alice");
        assert_eq!(allowed.downstream[0].action, MutationAction::Add);
    }

    #[test]
    fn denials_and_failures() {
        let denied = CheckResponse {
            status: status(7),
            http_response: Some(check_response::HttpResponse::DeniedResponse(
                DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![option("x-ext-authz-check-result", "denied", None, 0)],
                    body: "denied by ext_authz".into(),
                },
            )),
        };
        let settings = Settings::grpc("authz", "authz.foo.svc.cluster.local", 9000);
        let Verdict::Deny(d) = settings.decide(grpc_checked(&denied)) else {
            panic!("not denied");
        };
        assert_eq!(d.status, 401);
        assert_eq!(d.body, "denied by ext_authz");
        assert_eq!(d.headers[0].value, "denied");

        let bare = CheckResponse {
            status: status(7),
            http_response: None,
        };
        assert!(matches!(
            settings.decide(grpc_checked(&bare)),
            Verdict::Deny(Denied { status: 403, .. })
        ));

        let down = Checked::Failed(Failure::new("connection refused"));
        assert!(matches!(
            settings.decide(down.clone()),
            Verdict::Deny(Denied { status: 403, .. })
        ));
        let mut teapot = settings.clone();
        teapot.status_on_error = 418;
        assert!(matches!(
            teapot.decide(down.clone()),
            Verdict::Deny(Denied { status: 418, .. })
        ));
        let mut open = settings.clone();
        open.fail_open = true;
        assert!(matches!(
            open.decide(down),
            Verdict::Allow(Allowed {
                failed_open: Some(_),
                ..
            })
        ));

        let error = CheckResponse {
            status: status(13),
            http_response: Some(check_response::HttpResponse::ErrorResponse(
                DeniedHttpResponse {
                    status: None,
                    headers: Vec::new(),
                    body: "backend down".into(),
                },
            )),
        };
        let Verdict::Deny(d) = teapot.decide(grpc_checked(&error)) else {
            panic!("not denied");
        };
        assert_eq!((d.status, d.body.as_ref()), (418, &b"backend down"[..]));
        assert!(matches!(
            open.decide(grpc_checked(&error)),
            Verdict::Allow(_)
        ));
    }

    #[test]
    fn network_checks_read_the_status_only() {
        let ok = CheckResponse {
            status: None,
            http_response: None,
        };
        assert!(matches!(network_checked(&ok), Checked::Allow(_)));
        let no = CheckResponse {
            status: status(7),
            http_response: None,
        };
        assert!(matches!(network_checked(&no), Checked::Deny(_)));
    }
}
