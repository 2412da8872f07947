//! A cluster is what Envoy calls the endpoints of one (host, subset, port): the
//! DestinationRule policy that applies to them and the state that policy keeps (balancer,
//! outlier detector, circuit breaker), shared by every request to it.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use weft_config::api::networking::DestinationRule;
use weft_config::registry::Snapshot;

use super::connections::Transport;
use super::endpoints::Candidate;
use crate::upstream::balance::{Balancer, HashInput, Pick};
use crate::upstream::limits::CircuitBreaker;
use crate::upstream::outlier::OutlierDetector;
use crate::upstream::policy::EffectivePolicy;
use crate::upstream::tls::{Origination, TlsPlan, TlsSetupError, plan};

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
    /// endpoints, endpoints not `tried` yet come first when `prefer_untried` (a retry), and
    /// the balancer picks among the rest.
    pub fn choose<'c>(
        &self,
        found: &'c [Candidate],
        tried: &[SocketAddr],
        prefer_untried: bool,
        input: &HashInput<'_>,
    ) -> Option<(&'c Candidate, Pick)> {
        let addresses: Vec<SocketAddr> = found.iter().map(|c| c.address).collect();
        let mut healthy = match &self.outlier {
            Some(outlier) => outlier.filter(&addresses, Instant::now()),
            None => addresses,
        };
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
        let pick = self.balancer.pick(&healthy, input)?;
        let candidate = found.iter().find(|c| c.address == pick.endpoint)?;
        Some((candidate, pick))
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
            policy,
            rule,
            host: key.host.clone(),
            origination: Mutex::new(None),
        });
        by_key.insert(key.clone(), cluster.clone());
        cluster
    }
}
