//! What routing knows of a request and of its client.
use std::collections::BTreeMap;

/// The client of a request, as far as the mesh knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub principal: Option<String>,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What routing looks at in a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a http::Method,
    /// Origin form (path and query); an absolute form is accepted too.
    pub uri: &'a http::Uri,
    /// `:authority` / `Host` as the client sent it.
    pub authority: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The service port the client dialed.
    pub port: u16,
    pub source: &'a Source,
    /// The request's verified JWT, for `@request.auth.claims` header matches.
    pub auth: Option<&'a weft_config::authn::Authenticated>,
}

impl<'a> RequestFacts<'a> {
    /// `:path` as Envoy holds it: path and query.
    pub fn path_and_query(&self) -> &'a str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }

    /// The path without its query, which is what Envoy's path matchers look at.
    pub fn path(&self) -> &'a str {
        let pq = self.path_and_query();
        pq.split_once('?').map_or(pq, |(path, _)| path)
    }

    pub fn query(&self) -> Option<&'a str> {
        self.path_and_query()
            .split_once('?')
            .map(|(_, query)| query)
    }

    /// `:scheme`. Requests reach the waypoint as plaintext HTTP inside HBONE, so an
    /// origin-form URI means `http`.
    pub fn scheme(&self) -> &'a str {
        self.uri.scheme_str().unwrap_or("http")
    }
}
