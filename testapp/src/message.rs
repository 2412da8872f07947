//! HTTP message helpers shared by the clients and the server: what a URL names, headers as
//! the JSON reports show them.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use hyper::Uri;
use hyper::header::HeaderMap;

/// What an `http://` URL names. Shared with `load`.
pub struct UrlParts {
    /// `host:port` for the resolver.
    pub connect: String,
    /// The URL's authority, for the Host header.
    pub authority: String,
    pub path_and_query: String,
}

pub fn url_parts(url: &str) -> Result<UrlParts> {
    parts(url, false).map(|(parts, _)| parts)
}

/// Like [`url_parts`], `https://` too (port 443 by default): whether it is TLS, and the
/// host (the TLS server name).
pub fn url_parts_tls(url: &str) -> Result<(UrlParts, Option<String>)> {
    parts(url, true)
}

fn parts(url: &str, https: bool) -> Result<(UrlParts, Option<String>)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid URL {url:?}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") if https => true,
        Some(other) => bail!("unsupported scheme {other:?} in {url:?}: only http"),
        None => bail!("URL {url:?} needs a scheme, e.g. http://host:port/path"),
    };
    let authority = uri
        .authority()
        .with_context(|| format!("URL {url:?} has no host"))?;
    // `host()` keeps the brackets of an IPv6 literal, which is what the resolver wants.
    let connect = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(if tls { 443 } else { 80 })
    );
    let parts = UrlParts {
        connect,
        authority: authority.as_str().to_owned(),
        path_and_query: uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
    };
    Ok((parts, tls.then(|| authority.host().to_owned())))
}

/// Lowercase names (hyper already stores them so), every value kept in arrival order.
pub fn header_map(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    map
}
