//! A cluster is what Envoy calls the endpoints of one (host, subset, port): the
//! DestinationRule policy that applies to them and the state that policy keeps (balancer,
//! outlier detector, circuit breaker), shared by every request to it.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use weft_config::api::networking::{DestinationRule, LocalityLbSetting};
use weft_config::registry::Snapshot;

use super::connections::Transport;
use super::endpoints::Candidate;
use crate::upstream::balance::{Balancer, HashInput, Pick};
use crate::upstream::limits::CircuitBreaker;
use crate::upstream::locality::{self, Place};
use crate::upstream::outlier::OutlierDetector;
use crate::upstream::policy::EffectivePolicy;
use crate::upstream::tls::{Origination, TlsPlan, TlsSetupError, plan};
use crate::upstream::warmup::SlowStart;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
}

pub struct Cluster {
    pub policy: EffectivePolicy,
    pub balancer: Balancer,
    pub outlier: Option<OutlierDetector>,
    pub breaker: Arc<CircuitBreaker>,
    /// When each endpoint joined, with `warmupDurationSecs`.
    slow_start: Option<SlowStart>,
    /// The DestinationRule this state was built from: a new one rebuilds it.
    rule: Option<Arc<DestinationRule>>,
    host: String,
    /// The TLS originated to plain endpoints, as last built (files and Secrets are read
    /// again when the configuration changes).
    origination: Mutex<Option<BuiltOrigination>>,
}

type OriginationResult = Result<Option<Arc<Origination>>, TlsSetupError>;

struct BuiltOrigination {
    version: u64,
    plan: Option<TlsPlan>,
    result: OriginationResult,
}

impl Cluster {
    /// `found` with the endpoints outside the mesh reached in the TLS the cluster's
    /// DestinationRule originates (mesh pods stay on HBONE). `Err` when that TLS cannot be
    /// set up: the request fails rather than going out in plain text.
    pub fn originate(
        &self,
        mut found: Vec<Candidate>,
        snapshot: &Snapshot,
        namespace: &str,
    ) -> Result<Vec<Candidate>, TlsSetupError> {
        if !found.iter().any(|c| c.transport == Transport::Plain) {
            return Ok(found);
        }
        let Some(origination) = self.origination(snapshot, namespace)? else {
            return Ok(found);
        };
        for candidate in &mut found {
            if candidate.transport == Transport::Plain {
                candidate.transport = Transport::Tls(origination.clone());
            }
        }
        Ok(found)
    }

    fn origination(&self, snapshot: &Snapshot, namespace: &str) -> OriginationResult {
        let mut built = weft_core::sync::lock(&self.origination);
        let version = snapshot.version();
        if let Some(done) = built.as_ref()
            && done.version == version
        {
            return done.result.clone();
        }
        let rule = self.rule.as_ref().map_or_else(String::new, |r| {
            format!(
                "{}/{}",
                r.metadata.namespace.as_deref().unwrap_or_default(),
                r.metadata.name.as_deref().unwrap_or_default()
            )
        });
        let entry = snapshot.service_by_host(&self.host).is_none();
        let planned = plan(self.policy.tls.as_ref(), &self.host, &rule, entry);
        let result = match &planned {
            Err(error) => Err(error.clone()),
            Ok(None) => Ok(None),
            Ok(Some(wanted)) => match built.as_ref() {
                // Unchanged settings read from files only: keep the configuration (and
                // the connections pooled under it).
                Some(done)
                    if done.plan.as_ref() == Some(wanted)
                        && !uses_secret(wanted)
                        && done.result.is_ok() =>
                {
                    done.result.clone()
                }
                _ => Origination::build(wanted, snapshot, namespace, &rule)
                    .map(|o| Some(Arc::new(o))),
            },
        };
        if let Err(error) = &result {
            tracing::warn!(%error, host = %self.host, "TLS origination cannot be set up; requests fail");
        }
        *built = Some(BuiltOrigination {
            version,
            plan: planned.ok().flatten(),
            result: result.clone(),
        });
        result
    }

    /// One of `found` for a request or stream: outlier detection removes ejected
    /// endpoints, locality load balancing keeps those of the priority (and locality) the
    /// request falls to, endpoints not `tried` yet come first when `prefer_untried` (a
    /// retry), and the balancer picks among the rest (a warming endpoint less often).
    pub fn choose<'c>(
        &self,
        found: &'c [Candidate],
        tried: &[SocketAddr],
        prefer_untried: bool,
        input: &HashInput<'_>,
        here: &Here<'_>,
    ) -> Option<(&'c Candidate, Pick)> {
        let now = Instant::now();
        let addresses: Vec<SocketAddr> = found.iter().map(|c| c.address).collect();
        if let Some(slow_start) = &self.slow_start {
            slow_start.track(&addresses, now);
        }
        let mut healthy = match &self.outlier {
            Some(outlier) => outlier.filter(&addresses, now),
            None => addresses.clone(),
        };
        if let Some(setting) = self.locality(here.snapshot) {
            let endpoints: Vec<Place> = addresses.iter().map(|a| here.endpoint_place(*a)).collect();
            let slots = locality::plan(
                setting,
                self.outlier.is_some(),
                &here.proxy_place(),
                &endpoints,
            );
            healthy = locality::narrow(&addresses, &slots, &healthy, fastrand::u64(..));
        }
        if prefer_untried && !tried.is_empty() {
            let untried: Vec<SocketAddr> = healthy
                .iter()
                .copied()
                .filter(|a| !tried.contains(a))
                .collect();
            if !untried.is_empty() {
                healthy = untried;
            }
        }
        let pick = match &self.slow_start {
            Some(slow_start) => {
                slow_start.pick(&self.balancer, &healthy, input, now, fastrand::f64)?
            }
            None => self.balancer.pick(&healthy, input)?,
        };
        let candidate = found.iter().find(|c| c.address == pick.endpoint)?;
        Some((candidate, pick))
    }

    /// The locality setting in force when it can change anything: the rule's, else the mesh
    /// config's, else Istio's default (enabled); `None` when it is off, or when it fails
    /// over (no `distribute`) and the cluster has no outlier detection, which Istio needs
    /// for failover.
    fn locality<'s>(&'s self, snapshot: &'s Snapshot) -> Option<&'s LocalityLbSetting> {
        static ENABLED: LocalityLbSetting = LocalityLbSetting {
            distribute: Vec::new(),
            failover: Vec::new(),
            failover_priority: Vec::new(),
            enabled: None,
        };
        let setting = self
            .policy
            .locality
            .as_ref()
            .or(snapshot.mesh_config().locality_lb_setting.as_ref())
            .unwrap_or(&ENABLED);
        let applies = setting.enabled != Some(false)
            && (!setting.distribute.is_empty() || self.outlier.is_some());
        applies.then_some(setting)
    }
}

/// Where the waypoint runs, for locality load balancing: its own pod (`POD_NAME`, whose
/// labels and `istio-locality` count) and node (`NODE_NAME`, whose topology labels are its
/// locality), both from the downward API.
#[derive(Clone, Debug, Default)]
pub struct Whereabouts {
    pub namespace: String,
    pub pod: Option<String>,
    pub node: Option<String>,
}

/// The registry and the proxy's whereabouts, as one request sees them.
pub struct Here<'a> {
    pub snapshot: &'a Snapshot,
    pub proxy: &'a Whereabouts,
}

impl Here<'_> {
    /// The proxy's locality: its pod's, else its node's; and its pod's labels.
    fn proxy_place(&self) -> Place {
        let pod = self
            .proxy
            .pod
            .as_deref()
            .and_then(|name| self.snapshot.workload(&self.proxy.namespace, name));
        match pod {
            Some(workload) => Place {
                locality: self.snapshot.workload_locality(workload),
                labels: workload.labels.to_map(),
            },
            None => Place {
                locality: self
                    .proxy
                    .node
                    .as_deref()
                    .map(|node| self.snapshot.node_locality(node))
                    .unwrap_or_default(),
                labels: Default::default(),
            },
        }
    }

    /// An endpoint's locality and labels, when it is a pod the registry knows.
    fn endpoint_place(&self, address: SocketAddr) -> Place {
        self.snapshot
            .workload_by_ip(address.ip())
            .map(|workload| Place {
                locality: self.snapshot.workload_locality(workload),
                labels: workload.labels.to_map(),
            })
            .unwrap_or_default()
    }
}

fn uses_secret(plan: &TlsPlan) -> bool {
    matches!(plan.roots, crate::upstream::tls::Roots::Secret(_))
        || matches!(
            plan.client,
            Some(crate::upstream::tls::ClientCredential::Secret(_))
        )
}

/// Every cluster requests have gone to.
#[derive(Default)]
pub struct Clusters {
    by_key: Mutex<HashMap<ClusterKey, Arc<Cluster>>>,
}

impl Clusters {
    /// The cluster of `key` under the snapshot's DestinationRule for its host. State
    /// (ejections, in-flight counts) survives configuration changes that leave the rule
    /// alone.
    pub fn get(&self, snapshot: &Snapshot, key: &ClusterKey) -> Arc<Cluster> {
        let rule = snapshot
            .routes_for_host(&key.host)
            .and_then(|r| r.destination_rule.clone());
        let mut by_key = weft_core::sync::lock(&self.by_key);
        if let Some(cluster) = by_key.get(key) {
            let same = match (&cluster.rule, &rule) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if same {
                return cluster.clone();
            }
        }
        let policy = EffectivePolicy::resolve(rule.as_deref(), key.subset.as_deref(), key.port);
        let cluster = Arc::new(Cluster {
            balancer: Balancer::new(policy.load_balancer.clone()),
            outlier: policy
                .outlier
                .map(|config| OutlierDetector::new(config, Instant::now())),
            breaker: CircuitBreaker::new(&policy.connection_pool),
            slow_start: policy.warmup.map(SlowStart::new),
            policy,
            rule,
            host: key.host.clone(),
            origination: Mutex::new(None),
        });
        by_key.insert(key.clone(), cluster.clone());
        cluster
    }
}
