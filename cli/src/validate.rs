//! `weftctl validate`: the registry's validation, offline, over files and directories.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use weft_config::api::{Kind, Object, ObjectRef};
use weft_config::refusal::{Origin, Refusal, Warning};
use weft_config::registry::{Candidate, Change, Registry};
use weft_config::source::yaml;
use weft_config::translate::MeshSettings;
use weft_config::translate::gateway_routes;
use weft_config::validate::{self, KnownHosts};

/// One thing found in the files.
#[derive(Clone, Debug)]
pub enum Finding {
    /// A file that cannot be read, or a document that is not an object (where and why).
    Unreadable(String),
    /// A document of a kind meant for Istio that weft does not read (`api::unsupported`).
    KindNotRead(yaml::DocumentError),
    /// An object that does not get in: which field, why.
    Refused(Refusal),
    /// A field the object's schema does not have.
    UnknownField(Warning),
    /// Accepted with a doubt (validate's warnings, the waypoint, route and policy warnings,
    /// what only shows across objects).
    Warned(Warning),
}

impl Finding {
    /// Whether it makes `weftctl validate` fail.
    pub fn is_error(&self) -> bool {
        matches!(self, Finding::Unreadable(_) | Finding::Refused(_))
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Unreadable(line) => f.write_str(line),
            Finding::KindNotRead(document) => write!(f, "{document}"),
            Finding::Refused(r) | Finding::UnknownField(r) | Finding::Warned(r) => {
                write!(f, "{r}")
            }
        }
    }
}

/// What checking the files found, and the objects accepted (the newest version of each, with
/// where it came from) for the analyses `weftctl analyze` adds.
#[derive(Debug, Default)]
pub struct Checked {
    pub findings: Vec<Finding>,
    pub accepted: Vec<(Object, Option<Origin>)>,
    /// Objects read, refused ones included.
    pub objects: usize,
}

/// Everything found, in the order of the files and documents.
#[derive(Debug, Default)]
pub struct Report {
    /// Lines that make the check fail: unreadable files, documents that are not objects,
    /// refused objects.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub objects: usize,
}

impl From<&Checked> for Report {
    fn from(checked: &Checked) -> Self {
        let (errors, warnings): (Vec<&Finding>, Vec<&Finding>) =
            checked.findings.iter().partition(|f| f.is_error());
        Report {
            errors: errors.into_iter().map(ToString::to_string).collect(),
            warnings: warnings.into_iter().map(ToString::to_string).collect(),
            objects: checked.objects,
        }
    }
}

impl Report {
    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        for line in &self.errors {
            writeln!(out, "{line}")?;
        }
        for line in &self.warnings {
            writeln!(out, "warning: {line}")?;
        }
        writeln!(
            out,
            "{} objects checked: {} refused, {} warnings",
            self.objects,
            self.errors.len(),
            self.warnings.len()
        )
    }
}

pub fn check(paths: &[PathBuf], settings: &MeshSettings) -> Report {
    Report::from(&collect(paths, settings))
}

/// Reads the files and judges every object as the registry will (refusals, warnings, what
/// only shows across objects).
pub fn collect(paths: &[PathBuf], settings: &MeshSettings) -> Checked {
    let (findings, candidates) = read(paths);
    judge(findings, candidates, settings)
}

/// The objects of the files, and what keeps documents from being objects.
pub fn read(paths: &[PathBuf]) -> (Vec<Finding>, Vec<Candidate>) {
    let mut findings = Vec::new();
    let mut candidates = Vec::new();
    for root in paths {
        let files = match yaml::manifest_files(root) {
            Ok(files) => files,
            Err(e) => {
                findings.push(Finding::Unreadable(chain(&e)));
                continue;
            }
        };
        for file in files {
            match yaml::read_file(&file) {
                Ok(documents) => {
                    findings.extend(
                        documents
                            .errors
                            .iter()
                            .map(|e| Finding::Unreadable(e.to_string())),
                    );
                    // Kinds meant for Istio that weft does not read.
                    findings.extend(documents.ignored.into_iter().map(Finding::KindNotRead));
                    candidates.extend(documents.candidates);
                }
                Err(e) => findings.push(Finding::Unreadable(chain(&e))),
            }
        }
    }
    (findings, candidates)
}

/// Judges `candidates` (from files or the Kubernetes API) as the registry will, after
/// `findings` (what reading them found).
pub fn judge(
    mut findings: Vec<Finding>,
    candidates: Vec<Candidate>,
    settings: &MeshSettings,
) -> Checked {
    let objects_read = candidates.len();
    let objects: Vec<&Object> = candidates
        .iter()
        .filter_map(|c| c.object.as_ref().ok())
        .collect();
    let hosts = KnownHosts::from_objects(objects.iter().copied(), settings);
    // CUSTOM policies are checked against the mesh config among the files, if any.
    let mesh = objects
        .iter()
        .find_map(|o| match o {
            Object::MeshConfig(config)
                if config.metadata.namespace.as_deref()
                    == Some(settings.root_namespace.as_str()) =>
            {
                Some(config.mesh.clone())
            }
            _ => None,
        })
        .unwrap_or_default();
    let routes = route_issues(&objects, settings);
    let accepted: Vec<&Object> = objects
        .iter()
        .copied()
        .filter(|o| validate::validate(o).is_empty())
        .collect();
    let origins: std::collections::HashMap<weft_config::api::ObjectRef, _> = candidates
        .iter()
        .filter_map(|c| Some((c.object.as_ref().ok()?.object_ref(), c.origin.clone())))
        .collect();
    let mut cross = cross_warnings(&accepted, settings);
    // Rules and policies that only a waypoint applies, on what the files bind to none.
    let registry = Registry::new(settings.clone());
    registry.apply([Change::Replace {
        kinds: Kind::ALL.to_vec(),
        candidates: accepted
            .iter()
            .map(|o| Candidate::from((*o).clone()))
            .collect(),
    }]);
    let bindings = registry.snapshot();
    for candidate in &candidates {
        let origin = candidate.origin.clone();
        match &candidate.object {
            Err(refusal) => findings.push(Finding::Refused(refusal.clone())),
            Ok(object) => {
                let refusals = validate::validate(object);
                if refusals.is_empty() {
                    // Fields the object's schema does not have.
                    findings.extend(
                        candidate
                            .warnings
                            .iter()
                            .cloned()
                            .map(Finding::UnknownField),
                    );
                    findings.extend(
                        validate::waypoint_warnings(object, &*bindings, settings)
                            .into_iter()
                            .map(|w| w.with_origin(origin.clone()))
                            .map(Finding::Warned),
                    );
                    let is_known = |host: &str| hosts.contains(host);
                    findings.extend(
                        validate::warnings(object, &is_known, settings)
                            .into_iter()
                            .map(|w| w.with_origin(origin.clone()))
                            .map(Finding::Warned),
                    );
                    // Gateway API routes resolved against the files' other objects.
                    findings.extend(
                        routes
                            .get(&object.object_ref())
                            .into_iter()
                            .flatten()
                            .map(|w| w.clone().with_origin(origin.clone()))
                            .map(Finding::Warned),
                    );
                    if let Object::AuthorizationPolicy(policy) = object {
                        findings.extend(
                            validate::policy_warnings(policy, &mesh)
                                .into_iter()
                                .map(|w| w.with_origin(origin.clone()))
                                .map(Finding::Warned),
                        );
                    }
                    if origins.get(&object.object_ref()) == Some(&origin)
                        && let Some(found) = cross.remove(&object.object_ref())
                    {
                        findings.extend(
                            found
                                .into_iter()
                                .map(|w| w.with_origin(origin.clone()))
                                .map(Finding::Warned),
                        );
                    }
                } else {
                    findings.extend(
                        refusals
                            .into_iter()
                            .map(|r| Finding::Refused(r.with_origin(origin.clone()))),
                    );
                }
            }
        }
    }
    // The newest version of each accepted object, as the registry keeps it.
    let accepted = candidates
        .iter()
        .filter_map(|c| {
            let object = c.object.as_ref().ok()?;
            let newest = origins.get(&object.object_ref()) == Some(&c.origin);
            (newest && validate::validate(object).is_empty())
                .then(|| (object.clone(), c.origin.clone()))
        })
        .collect();
    Checked {
        findings,
        accepted,
        objects: objects_read,
    }
}
/// Gateways with the VirtualServices bound to them and the Secrets they name, among the
/// files (oldest first: the files' order, for objects without a creation time).
fn cross_warnings(
    objects: &[&Object],
    settings: &MeshSettings,
) -> std::collections::BTreeMap<weft_config::api::ObjectRef, Vec<weft_config::Warning>> {
    let mut gateways = Vec::new();
    let mut virtual_services = Vec::new();
    let mut secrets = std::collections::HashSet::new();
    for object in objects {
        match object {
            Object::Gateway(g) => gateways.push(g),
            Object::VirtualService(v) => virtual_services.push(v),
            Object::Secret(_) => {
                let r = object.object_ref();
                secrets.insert((r.namespace, r.name));
            }
            _ => {}
        }
    }
    gateways.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    let namespace = settings.secrets_namespace.clone().unwrap_or_default();
    let has = |name: &str| secrets.contains(&(namespace.clone(), name.to_string()));
    let mut found = validate::gateway::cross_warnings(
        &gateways,
        &virtual_services,
        Some((namespace.as_str(), &has)),
    );
    // Addresses two ServiceEntries, or a ServiceEntry and a Service, both claim (the files'
    // order for objects without a creation time, as the registry orders them).
    let mut entries: Vec<std::sync::Arc<weft_config::api::networking::ServiceEntry>> = objects
        .iter()
        .filter_map(|o| match o {
            Object::ServiceEntry(entry) => Some(entry.clone()),
            _ => None,
        })
        .collect();
    entries.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    let cluster_ips: Vec<(std::net::IpAddr, String)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(service) => Some(service),
            _ => None,
        })
        .flat_map(|service| {
            let name = format!(
                "{}/{}",
                service.metadata.namespace.as_deref().unwrap_or_default(),
                service.metadata.name.as_deref().unwrap_or_default()
            );
            service
                .spec
                .cluster_ips
                .iter()
                .chain(service.spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .map(move |ip| (ip, name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let service_at = |ip: std::net::IpAddr| {
        cluster_ips
            .iter()
            .find(|(at, _)| *at == ip)
            .map(|(_, name)| name.clone())
    };
    for (object, warnings) in validate::address_overlaps(&entries, &service_at) {
        found.entry(object).or_default().extend(warnings);
    }
    found
}

fn chain(error: &dyn std::error::Error) -> String {
    weft_config::source::error_chain(error)
}

/// What resolving the Gateway API routes among `objects` against the others finds
/// (parents that do not exist or are refused, backends no ReferenceGrant allows): the
/// registry's own resolution, run on the files.
fn route_issues(
    objects: &[&Object],
    settings: &MeshSettings,
) -> BTreeMap<ObjectRef, Vec<weft_config::refusal::Warning>> {
    let is_route = |o: &&&Object| {
        matches!(
            o,
            Object::HttpRoute(_) | Object::GrpcRoute(_) | Object::TlsRoute(_) | Object::TcpRoute(_)
        )
    };
    if !objects.iter().any(|o| is_route(&o)) {
        return BTreeMap::new();
    }
    let registry = Registry::new(settings.clone());
    registry.apply([Change::Replace {
        kinds: Kind::ALL.to_vec(),
        candidates: objects
            .iter()
            .map(|o| Candidate::from((*o).clone()))
            .collect(),
    }]);
    let mut found: BTreeMap<ObjectRef, Vec<weft_config::refusal::Warning>> = BTreeMap::new();
    for resolution in registry.snapshot().route_resolutions() {
        let route = resolution.route.object_ref();
        for (field, reason) in gateway_routes::issues(resolution) {
            found
                .entry(route.clone())
                .or_default()
                .push(weft_config::refusal::Refusal::new(
                    route.clone(),
                    field,
                    reason,
                ));
        }
    }
    found
}
