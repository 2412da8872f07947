//! The headers of an HBONE CONNECT, in the forms ztunnel sends and accepts.
use std::net::{IpAddr, SocketAddr};

pub const FORWARDED: &str = "forwarded";
pub const BAGGAGE: &str = "baggage";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the CONNECT request has no :authority")]
    Missing,
    #[error(":authority {0:?} is not an IP address and port")]
    NotIpPort(String),
    #[error(":authority {0:?} has port 0")]
    PortZero(String),
}

/// The destination of a CONNECT: HBONE's `:authority` is always the original destination
/// as `ip:port` (`[v6]:port`), never a host name.
pub fn parse_authority(authority: &str) -> Result<SocketAddr, AuthorityError> {
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| AuthorityError::NotIpPort(authority.to_owned()))?;
    if addr.port() == 0 {
        return Err(AuthorityError::PortZero(authority.to_owned()));
    }
    Ok(addr)
}

/// `Forwarded: for=<ip>` as ztunnel writes it (RFC 7239: IPv6 quoted and bracketed).
pub fn forwarded_for(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    }
}

/// The first `for=` address of a `Forwarded` header. Ports, quoting and case of the
/// parameter name are tolerated; `unknown` and obfuscated identifiers give `None`.
pub fn parse_forwarded_for(value: &str) -> Option<IpAddr> {
    let element = value.split(',').next()?;
    let raw = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(raw);
    if let Some(bracketed) = unquoted.strip_prefix('[') {
        let (v6, _port) = bracketed.split_once(']')?;
        return v6.parse().ok();
    }
    if let Ok(ip) = unquoted.parse() {
        return Some(ip);
    }
    // IPv4 with a port.
    unquoted.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The `baggage` ztunnel sends: what the peer needs to label its telemetry with the
/// source workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadBaggage {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    /// The kind and name of the workload's owner (`deployment`, `web`, ...).
    pub workload: Option<(String, String)>,
    pub service: Option<String>,
    pub version: Option<String>,
}

impl WorkloadBaggage {
    pub fn header_value(&self) -> String {
        let mut entries = Vec::new();
        if let Some(cluster) = &self.cluster {
            entries.push(format!("k8s.cluster.name={cluster}"));
        }
        if let Some(namespace) = &self.namespace {
            entries.push(format!("k8s.namespace.name={namespace}"));
        }
        if let Some((kind, name)) = &self.workload {
            entries.push(format!("k8s.{kind}.name={name}"));
        }
        if let Some(service) = &self.service {
            entries.push(format!("service.name={service}"));
        }
        if let Some(version) = &self.version {
            entries.push(format!("service.version={version}"));
        }
        entries.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_is_ip_and_port() {
        assert_eq!(
            parse_authority("10.244.1.5:8080"),
            Ok("10.244.1.5:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_authority("[fd00::5]:443"),
            Ok("[fd00::5]:443".parse().expect("addr"))
        );
        for bad in [
            "",
            "web:80",
            "web.shop.svc.cluster.local:80",
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:http",
            "10.0.0.1:65536",
            "fd00::5:443",
            "[fd00::5]",
            "10.0.0.1:80/path",
        ] {
            assert!(
                matches!(parse_authority(bad), Err(AuthorityError::NotIpPort(_))),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            parse_authority("10.0.0.1:0"),
            Err(AuthorityError::PortZero(_))
        ));
    }

    #[test]
    fn forwarded_round_trips_in_ztunnels_form() {
        let v4: IpAddr = "10.244.0.7".parse().expect("ip");
        let v6: IpAddr = "fd00::7".parse().expect("ip");
        assert_eq!(forwarded_for(v4), "for=10.244.0.7");
        assert_eq!(forwarded_for(v6), "for=\"[fd00::7]\"");
        assert_eq!(parse_forwarded_for(&forwarded_for(v4)), Some(v4));
        assert_eq!(parse_forwarded_for(&forwarded_for(v6)), Some(v6));
    }

    #[test]
    fn forwarded_parsing_follows_rfc7239() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert_eq!(
            parse_forwarded_for("For=\"192.0.2.60:4711\""),
            ip("192.0.2.60")
        );
        assert_eq!(
            parse_forwarded_for("for=\"[2001:db8:cafe::17]:4711\""),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            parse_forwarded_for("proto=http;for=192.0.2.43;by=203.0.113.60"),
            ip("192.0.2.43")
        );
        // The first element is the original client.
        assert_eq!(
            parse_forwarded_for("for=192.0.2.43, for=198.51.100.17"),
            ip("192.0.2.43")
        );
        assert_eq!(parse_forwarded_for("for=unknown"), None);
        assert_eq!(parse_forwarded_for("for=_hidden"), None);
        assert_eq!(parse_forwarded_for("by=192.0.2.1"), None);
        assert_eq!(parse_forwarded_for(""), None);
    }

    #[test]
    fn baggage_lists_what_is_known() {
        let baggage = WorkloadBaggage {
            cluster: Some("Kubernetes".into()),
            namespace: Some("shop".into()),
            workload: Some(("deployment".into(), "web".into())),
            service: Some("web".into()),
            version: Some("v1".into()),
        };
        assert_eq!(
            baggage.header_value(),
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.deployment.name=web,service.name=web,service.version=v1"
        );
        assert_eq!(WorkloadBaggage::default().header_value(), "");
    }
}
