//! Reading the counters over HTTP: instant queries on Prometheus' API, or the `/metrics`
//! pages of agents and waypoints. Plain HTTP/1.1 over std's TcpStream, one request per
//! connection (Prometheus and the metrics ports serve no TLS in the mesh's own namespace).
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::inspect::client::parse_response;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Far above a large mesh's metrics page; stops a wrong address from filling memory.
const MAX_RESPONSE: u64 = 256 * 1024 * 1024;
/// The port and path the agents' and waypoints' `prometheus.io/*` annotations give.
pub const METRICS_PATH: &str = "/stats/prometheus";

/// `http://host:port/path` → (`host:port`, `/path`); no path gives `default_path`.
pub fn split_url<'a>(url: &'a str, default_path: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http:// URLs are read");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, default_path),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    Ok((authority, if path == "/" { default_path } else { path }))
}

/// `GET path` on `authority`; the body of a 200 answer.
pub fn get(authority: &str, path: &str) -> anyhow::Result<String> {
    let what = || format!("GET http://{authority}{path}");
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("{}: cannot resolve {authority}", what()))?
        .next()
        .with_context(|| format!("{}: {authority} resolves to no address", what()))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).with_context(what)?;
    stream.set_read_timeout(Some(TIMEOUT)).with_context(what)?;
    stream.set_write_timeout(Some(TIMEOUT)).with_context(what)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weftctl/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .with_context(what)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .with_context(what)?;
    let response = parse_response(&raw)
        .map_err(anyhow::Error::msg)
        .with_context(what)?;
    let body = String::from_utf8_lossy(&response.body).into_owned();
    if response.status != 200 {
        bail!("{}: answered {}: {}", what(), response.status, body.trim());
    }
    Ok(body)
}

/// A query string's value, percent-encoded.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://10.0.0.1:15020", METRICS_PATH).expect("splits"),
            ("10.0.0.1:15020", METRICS_PATH)
        );
        assert_eq!(
            split_url("http://prom:9090/", "/x").expect("splits"),
            ("prom:9090", "/x")
        );
        assert_eq!(
            split_url("http://a:1/metrics", METRICS_PATH).expect("splits"),
            ("a:1", "/metrics")
        );
        assert!(split_url("https://a:1", "/").is_err());
        assert_eq!(encode("sum(a{b=\"c\"})"), "sum%28a%7Bb%3D%22c%22%7D%29");
    }

    #[test]
    fn a_closed_port_is_an_error_naming_the_url() {
        // Bind and drop: the port is closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let error = get(&format!("127.0.0.1:{port}"), "/x").expect_err("closed");
        assert!(
            format!("{error:#}").contains(&format!("GET http://127.0.0.1:{port}/x")),
            "{error:#}"
        );
    }
}
