//! The internet the cluster reaches out to: a network beyond the lab's router (TEST-NET-1,
//! which exists only inside the lab's namespaces) with external hosts — each a namespace
//! with its own address, serving HTTP on 80 and HTTPS on 443 with nginx under a certificate
//! from a test CA the lab makes — and a DNS server (dnsmasq) that names them.
//!
//! As in a cloud: a pod's connection to the internet leaves through its node, which
//! masquerades it behind the node's address (ip-masq-agent's rule: only what leaves the
//! cluster's networks), and the router forwards it; the pods' resolv.conf names the DNS
//! server, as a cluster's resolver would forward to the internet's. The lab's cluster names
//! still resolve from each pod's `/etc/hosts` first; the DNS server answers the external
//! names (`*.external.test`) and, as the cluster's DNS would, the Services' fully qualified
//! names (as the lab was brought up), NXDOMAIN for other names of those domains, and
//! refuses the rest: it has no upstream, the lab has no real internet.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::LabError;
use crate::plan::{
    CLUSTER_DOMAIN, EXTERNAL_DNS_IP, EXTERNAL_NETWORK, EXTERNAL_ROUTER_IP, ExternalHostPlan,
    ExternalPlan, Plan, ROUTER_IP,
};

/// The DNS domain of the external hosts.
pub const EXTERNAL_DOMAIN: &str = "external.test";

/// The router's commands (`ip -batch` in the fabric namespace): a bridge for the external
/// network with the router's address, and a link to each external host.
pub(crate) fn router_commands(external: &ExternalPlan) -> Vec<String> {
    let mut commands = vec![
        "link add inet0 type bridge".to_string(),
        format!("addr add {EXTERNAL_ROUTER_IP}/24 dev inet0"),
        "link set inet0 up".to_string(),
    ];
    for host in hosts(external) {
        commands.push(format!(
            "link add {} type veth peer name eth0 netns {}",
            host.router_if, host.netns
        ));
        commands.push(format!("link set {} master inet0 up", host.router_if));
    }
    commands
}

/// An external host's own network: its address, a default route through the router.
pub(crate) fn host_commands(host: &ExternalHostPlan) -> Vec<String> {
    vec![
        "link set lo up".to_string(),
        format!("addr add {}/24 dev eth0", host.ip),
        "link set eth0 up".to_string(),
        format!("route add default via {EXTERNAL_ROUTER_IP}"),
    ]
}

/// The external hosts and the DNS server.
pub(crate) fn hosts(external: &ExternalPlan) -> impl Iterator<Item = &ExternalHostPlan> {
    std::iter::once(&external.dns).chain(&external.hosts)
}

/// A node's way to the external network: through the router.
pub(crate) fn node_route() -> String {
    format!("route add {EXTERNAL_NETWORK}/24 via {ROUTER_IP}")
}

/// The nftables table with which a node masquerades its pods' connections to the
/// internet behind its own address (ip-masq-agent's rule), so the answers find their way
/// back: the router knows the nodes, not the pods.
pub const MASQUERADE_TABLE: &str = "weft_lab_masquerade";

pub(crate) fn node_masquerade(pod_cidr_base: Ipv4Addr, outside: Option<Ipv4Addr>) -> String {
    let mut internet = vec![format!("{EXTERNAL_NETWORK}/24")];
    internet.extend(outside.map(|net| format!("{net}/24")));
    format!(
        "table ip {MASQUERADE_TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    ip saddr {pod_cidr_base}/24 ip daddr {{ {} }} masquerade\n  }}\n}}\n",
        internet.join(", ")
    )
}

/// The DNS server's hosts file: every external host's name and address, and — as the
/// cluster's DNS (CoreDNS) would answer them — each Service's fully qualified name.
pub(crate) fn dns_hosts_file(plan: &Plan, external: &ExternalPlan) -> String {
    let mut out: String = external
        .hosts
        .iter()
        .map(|h| format!("{}\t{}\n", h.ip, h.name))
        .collect();
    for service in &plan.services {
        for ip in &service.cluster_ips {
            out.push_str(&format!("{ip}\t{}\n", service.fqdn()));
        }
    }
    out
}

/// dnsmasq as the internet's DNS server: authoritative for the external domain, no
/// upstream, no DHCP, its own configuration only, logging each query to stderr.
pub(crate) fn dnsmasq_args(hosts_file: &Path) -> Vec<String> {
    vec![
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--addn-hosts={}", hosts_file.display()),
        format!("--listen-address={EXTERNAL_DNS_IP}"),
        "--bind-interfaces".into(),
        format!("--local=/{EXTERNAL_DOMAIN}/"),
        format!("--local=/{CLUSTER_DOMAIN}/"),
        "--log-queries".into(),
        "--log-facility=-".into(),
        "--pid-file=".into(),
        "--user=root".into(),
        "--group=root".into(),
    ]
}

/// Where an external host's files live: its certificate and key, nginx's configuration,
/// temporary files and access log.
#[derive(Clone, Debug)]
pub struct ExternalHostFiles {
    pub dir: PathBuf,
}

impl ExternalHostFiles {
    pub fn new(root: &Path, host: &ExternalHostPlan) -> Self {
        ExternalHostFiles {
            dir: root.join(&host.name),
        }
    }
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
    pub fn nginx_conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }
    /// One line per request: client address, scheme, SNI, Host, request line, status.
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }
}

/// nginx for one external host: HTTP on 80 and HTTPS on 443 (HTTP/1.1 and HTTP/2 by
/// ALPN), answering every request with what it saw — its own name, the scheme, the SNI the
/// client sent and the Host — so a test can tell TLS origination from plaintext.
pub(crate) fn nginx_config(host: &ExternalHostPlan, files: &ExternalHostFiles) -> String {
    let dir = files.dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {error} notice;
events {{ worker_connections 512; }}
http {{
    log_format weft '$remote_addr $scheme sni=$ssl_server_name host=$host "$request" $status';
    access_log {access} weft;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type text/plain;
    server {{
        listen {ip}:80;
        listen {ip}:443 ssl http2;
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            return 200 "server={name} scheme=$scheme sni=$ssl_server_name host=$host path=$request_uri\n";
        }}
    }}
}}
"#,
        error = files.error_log().display(),
        access = files.access_log().display(),
        ip = host.ip,
        name = host.name,
        cert = files.certificate().display(),
        key = files.key().display(),
    )
}

/// The lab's external CA and a certificate for each external host (its DNS name as the
/// only subject alternative name), as PEM: (CA certificate, [(host, certificate, key)]).
pub(crate) type ExternalPki = (String, Vec<(String, String, String)>);

pub(crate) fn make_pki(external: &ExternalPlan) -> Result<ExternalPki, LabError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |e: rcgen::Error| LabError::Invalid(format!("{what}: {e}"))
    };
    let ca_key = KeyPair::generate().map_err(err("generating the external CA's key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())
        .map_err(err("the external CA's parameters"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "weft lab external CA");
    ca.distinguished_name = dn;
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(err("signing the external CA"))?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaves = Vec::new();
    for host in &external.hosts {
        let key = KeyPair::generate().map_err(err("generating a host key"))?;
        let mut params = CertificateParams::new(vec![host.name.clone()])
            .map_err(err("a host certificate's parameters"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.name.clone());
        params.distinguished_name = dn;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(err("signing a host certificate"))?;
        leaves.push((host.name.clone(), cert.pem(), key.serialize_pem()));
    }
    Ok((ca_pem, leaves))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::Manifests;
    use crate::plan::LabOptions;

    fn plan() -> Plan {
        Plan::build(&LabOptions::new("t").nodes(2), &Manifests::default()).expect("plan")
    }

    #[test]
    fn external_hosts_sit_behind_the_router_and_nodes_masquerade_only_what_leaves() {
        let plan = plan();
        let external = plan.external.as_ref().expect("external");
        let router = router_commands(external).join("\n");
        assert!(
            router.contains("addr add 192.0.2.1/24 dev inet0"),
            "{router}"
        );
        assert!(
            router.contains("link add x-api type veth peer name eth0 netns wl-t-x-api"),
            "{router}"
        );
        assert!(
            router.contains("link set x-dns master inet0 up"),
            "{router}"
        );
        let api = external.host("api").expect("api host");
        assert_eq!(api.ip, Ipv4Addr::new(192, 0, 2, 10));
        assert!(host_commands(api).contains(&"route add default via 192.0.2.1".to_string()));
        assert_eq!(node_route(), "route add 192.0.2.0/24 via 10.240.0.1");
        let rules = node_masquerade(
            Ipv4Addr::new(10, 244, 1, 0),
            Some(Ipv4Addr::new(203, 0, 113, 0)),
        );
        assert!(
            rules.contains(
                "ip saddr 10.244.1.0/24 ip daddr { 192.0.2.0/24, 203.0.113.0/24 } masquerade"
            ),
            "{rules}"
        );
    }

    #[test]
    fn the_dns_server_names_every_external_host_and_never_forwards() {
        let plan = plan();
        let external = plan.external.as_ref().expect("external");
        let hosts = dns_hosts_file(&plan, external);
        assert!(hosts.contains("192.0.2.10\tapi.external.test\n"), "{hosts}");
        assert!(
            hosts.contains("192.0.2.11\tsecure.external.test\n"),
            "{hosts}"
        );
        let args = dnsmasq_args(Path::new("/x/hosts")).join(" ");
        assert!(args.contains("--no-resolv"), "never forwards: {args}");
        assert!(args.contains("--listen-address=192.0.2.53"), "{args}");
    }

    #[test]
    fn each_host_certificate_names_its_host_and_chains_to_the_external_ca() {
        let plan = plan();
        let external = plan.external.as_ref().expect("external");
        let (ca, leaves) = make_pki(external).expect("pki");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(leaves.len(), external.hosts.len());
        for (name, cert, key) in &leaves {
            let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("pem");
            let parsed = pem.parse_x509().expect("x509");
            let sans: Vec<String> = parsed
                .subject_alternative_name()
                .expect("ext")
                .expect("san")
                .value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect();
            assert_eq!(sans, [format!("DNSName({name})")]);
            assert!(parsed.issuer().to_string().contains("weft lab external CA"));
            assert!(key.contains("PRIVATE KEY"));
        }
    }
}
