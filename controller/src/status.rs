//! The status a Gateway of weft's class reports (Gateway API conditions), written back with
//! a merge patch of its `status` subresource:
//!
//! - `Accepted`: `True` (reason `Accepted`; the message lists what of the Gateway weft does
//!   not act on), or `False` with the judge's reason (`ListenersNotValid`, `Invalid`).
//! - `Programmed`: `True` once the Service has its ClusterIP (Istio's rule: the address is
//!   assigned), `False` with `AddressNotAssigned` before, `Invalid` when an object of a
//!   needed name is someone else's or the API server refused a write (422), `Pending` while
//!   writes fail otherwise.
//! - `addresses`: the Service's cluster IPs.
//!
//! `lastTransitionTime` moves only when a condition's status does; nothing is written when
//! nothing changed, so the controller's own status write does not make it write again.
use serde_json::{Value, json};

use crate::gateway::{Condition, Gateway};
use crate::ingress::ListenerStatus;
use crate::object::ObjectKey;
use crate::reconcile::Verdict;

/// What the controller knows after acting on a Gateway.
#[derive(Clone, Copy, Debug)]
pub struct Outcome<'a> {
    pub verdict: &'a Verdict,
    pub conflicts: &'a [ObjectKey],
    /// The waypoint's Service as the API server holds it, if it exists.
    pub service: Option<&'a Value>,
    /// A write the API server refused: (its HTTP status, what was written and why).
    pub failure: Option<(u16, &'a str)>,
    /// An ingress Gateway's listeners (`status.listeners`); empty: none written.
    pub listeners: &'a [ListenerStatus],
}

/// The merge patch of the Gateway's `status`, or `None` when it already says this (and for
/// a Gateway that is not weft's: its status is another controller's to write). `now` is an
/// RFC 3339 time ([`rfc3339`]).
pub fn patch(gateway: &Gateway, outcome: &Outcome<'_>, now: &str) -> Option<Value> {
    let (accepted, programmed, addresses) = match outcome.verdict {
        Verdict::NotOurs => return None,
        Verdict::Refused(refusal) => (
            ("False", refusal.reason, refusal.message.clone()),
            (
                "False",
                "Invalid",
                "not accepted: no waypoint runs for it".to_string(),
            ),
            Vec::new(),
        ),
        Verdict::Accepted { warnings, .. } => {
            let accepted = if warnings.is_empty() {
                "Resource accepted".to_string()
            } else {
                format!("Resource accepted; {}", warnings.join("; "))
            };
            let addresses = outcome.service.map(cluster_ips).unwrap_or_default();
            let programmed = if !outcome.conflicts.is_empty() {
                let names: Vec<String> = outcome.conflicts.iter().map(|k| k.to_string()).collect();
                (
                    "False",
                    "Invalid",
                    format!(
                        "{} already exist(s) and weft did not make it (no label gateway.istio.io/managed of weft's): \
                         delete it or name the Gateway otherwise",
                        names.join(", ")
                    ),
                )
            } else if let Some((code, message)) = outcome.failure {
                let reason = if code == 422 { "Invalid" } else { "Pending" };
                ("False", reason, message.to_string())
            } else if addresses.is_empty() {
                (
                    "False",
                    "AddressNotAssigned",
                    format!(
                        "waiting for Service {} to be given a cluster IP",
                        service_key(gateway, outcome.service)
                    ),
                )
            } else {
                (
                    "True",
                    "Programmed",
                    format!(
                        "Deployment, Service and ServiceAccount {} in place, reached at {}",
                        service_key(gateway, outcome.service),
                        addresses.join(", ")
                    ),
                )
            };
            (("True", "Accepted", accepted), programmed, addresses)
        }
    };
    let gateway_programmed = programmed.0 == "True";
    let conditions = [
        condition(gateway, "Accepted", accepted, now),
        condition(gateway, "Programmed", programmed, now),
    ];
    let listeners: Vec<Value> = outcome
        .listeners
        .iter()
        .map(|l| listener(gateway, l, gateway_programmed, now))
        .collect();
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"type": "IPAddress", "value": ip}))
        .collect();
    let unchanged = conditions.iter().all(|c| {
        gateway.condition(&c.type_).is_some_and(|have| {
            have.status == c.status
                && have.reason == c.reason
                && have.message == c.message
                && have.observed_generation == c.observed_generation
        })
    }) && gateway.conditions.len() == conditions.len()
        && gateway.addresses == addresses
        && (listeners.is_empty() || gateway.listener_status == listeners);
    if unchanged {
        return None;
    }
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|c| {
            let mut value = json!({
                "type": c.type_, "status": c.status, "reason": c.reason,
                "message": c.message, "lastTransitionTime": c.last_transition_time,
            });
            if let Some(generation) = c.observed_generation {
                value["observedGeneration"] = generation.into();
            }
            value
        })
        .collect();
    let mut status = json!({"conditions": conditions, "addresses": addresses});
    if !listeners.is_empty() {
        status["listeners"] = Value::Array(listeners);
    }
    Some(json!({ "status": status }))
}

/// One entry of `status.listeners`: `Accepted`, `ResolvedRefs` and `Programmed` (`True`
/// when the listener is accepted, its references resolved and the Gateway programmed; else
/// `Invalid`, or `Pending` while the Gateway is not). `attachedRoutes` is the count given
/// ([`crate::ingress::count_attached`]), else kept as found.
fn listener(gateway: &Gateway, status: &ListenerStatus, programmed: bool, now: &str) -> Value {
    let found = gateway
        .listener_status
        .iter()
        .find(|l| l["name"].as_str() == Some(status.name.as_str()));
    let condition = |type_: &str, (state, reason, message): (&str, &str, String)| {
        let since = found
            .and_then(|l| l["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"].as_str() == Some(type_)))
            .filter(|c| c["status"].as_str() == Some(state))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .filter(|t| !t.is_empty())
            .unwrap_or(now)
            .to_string();
        let mut value = json!({
            "type": type_, "status": state, "reason": reason,
            "message": message, "lastTransitionTime": since,
        });
        if let Some(generation) = gateway.generation {
            value["observedGeneration"] = generation.into();
        }
        value
    };
    let accepted = match &status.accepted {
        Ok(()) => ("True", "Accepted", "Listener accepted".to_string()),
        Err((reason, message)) => ("False", *reason, message.clone()),
    };
    let resolved = match &status.resolved_refs {
        Ok(()) => ("True", "ResolvedRefs", "References resolved".to_string()),
        Err(problem) => ("False", problem.reason, problem.message.clone()),
    };
    let listener_programmed = match (&status.accepted, &status.resolved_refs) {
        (Err(_), _) => (
            "False",
            "Invalid",
            "the listener is not accepted".to_string(),
        ),
        // Route kinds the listener cannot take are left out; it serves the others.
        (_, Err(problem)) if problem.reason != "InvalidRouteKinds" => (
            "False",
            "Invalid",
            format!("TLS connections are refused: {}", problem.message),
        ),
        _ if !programmed => (
            "False",
            "Pending",
            "waiting for the Gateway to be programmed".to_string(),
        ),
        _ => ("True", "Programmed", "Listener programmed".to_string()),
    };
    json!({
        "name": status.name,
        "supportedKinds": status
            .supported_kinds
            .iter()
            .map(|kind| json!({"group": crate::gateway::GATEWAY_API_GROUP, "kind": kind}))
            .collect::<Vec<_>>(),
        "attachedRoutes": status
            .attached_routes
            .map(i64::from)
            .or_else(|| found.and_then(|l| l["attachedRoutes"].as_i64()))
            .unwrap_or(0),
        "conditions": [
            condition("Accepted", accepted),
            condition("ResolvedRefs", resolved),
            condition("Programmed", listener_programmed),
        ],
    })
}

fn condition(
    gateway: &Gateway,
    type_: &str,
    (status, reason, message): (&str, &str, String),
    now: &str,
) -> Condition {
    let since = gateway
        .condition(type_)
        .filter(|c| c.status == status && !c.last_transition_time.is_empty())
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: gateway.generation,
        last_transition_time: since,
    }
}

/// The Service's cluster IPs (`spec.clusterIPs`, else `spec.clusterIP`), without `None`
/// (a headless Service has no address).
/// `namespace/name` of the objects made for the Gateway (its Service's name: a waypoint's
/// are named after the Gateway, an ingress gateway's `<name>-<class>`).
fn service_key(gateway: &Gateway, service: Option<&Value>) -> String {
    let name = service
        .and_then(|s| s["metadata"]["name"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| crate::waypoint::service_account_name(gateway));
    format!("{}/{name}", gateway.namespace)
}

/// Where the Gateway is reached: a LoadBalancer Service's ingress addresses once it has
/// them (an ingress gateway's, as Istio reports them), else the cluster IPs.
fn cluster_ips(service: &Value) -> Vec<String> {
    let balanced: Vec<String> = service["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !balanced.is_empty() {
        return balanced;
    }
    let spec = &service["spec"];
    let listed: Vec<String> = spec["clusterIPs"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let ips = if listed.is_empty() {
        spec["clusterIP"]
            .as_str()
            .map(|ip| vec![ip.to_string()])
            .unwrap_or_default()
    } else {
        listed
    };
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
}

/// Seconds since the Unix epoch as RFC 3339 in UTC (`2026-12-07T10:00:00Z`), the form of
/// Kubernetes' `metav1.Time`.
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let rest = unix_seconds % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectKind;
    use crate::waypoint::{Refusal, gateway_manifest};

    fn gateway() -> Gateway {
        let mut value = gateway_manifest("wp", "shop", "service");
        value["metadata"]["generation"] = 2.into();
        Gateway::from_json(&value).expect("gateway")
    }

    fn accepted() -> Verdict {
        Verdict::Accepted {
            class: crate::class::Class::Waypoint,
            warnings: Vec::new(),
        }
    }

    fn with_status(mut gw: Gateway, patch: &Value) -> Gateway {
        let mut value = gateway_manifest(&gw.name, &gw.namespace, "service");
        value["metadata"]["generation"] = gw.generation.into();
        value["status"] = patch["status"].clone();
        gw = Gateway::from_json(&value).expect("gateway");
        gw
    }

    #[test]
    fn programmed_once_the_service_has_its_address_and_written_only_on_change() {
        let verdict = accepted();
        let gw = gateway();
        let waiting = Outcome {
            verdict: &verdict,
            conflicts: &[],
            service: None,
            failure: None,
            listeners: &[],
        };
        let first = patch(&gw, &waiting, "2026-01-01T00:00:00Z").expect("a first status");
        assert_eq!(first["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            first["status"]["conditions"][1]["reason"],
            "AddressNotAssigned"
        );
        assert_eq!(first["status"]["conditions"][1]["observedGeneration"], 2);
        let gw = with_status(gw, &first);
        assert_eq!(patch(&gw, &waiting, "2026-01-01T00:00:09Z"), None);

        let service = json!({"spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"]}});
        let ready = Outcome {
            service: Some(&service),
            ..waiting
        };
        let second = patch(&gw, &ready, "2026-01-01T00:01:00Z").expect("programmed");
        let conditions = &second["status"]["conditions"];
        assert_eq!(conditions[1]["status"], "True");
        assert_eq!(conditions[1]["reason"], "Programmed");
        assert_eq!(
            conditions[0]["lastTransitionTime"], "2026-01-01T00:00:00Z",
            "Accepted did not change"
        );
        assert_eq!(conditions[1]["lastTransitionTime"], "2026-01-01T00:01:00Z");
        assert_eq!(
            second["status"]["addresses"],
            json!([{"type": "IPAddress", "value": "10.96.0.20"}])
        );
    }

    #[test]
    fn refusals_conflicts_and_failures_say_why() {
        let gw = gateway();
        let refused = Verdict::Refused(Refusal {
            reason: "ListenersNotValid",
            message: "spec.listeners: none".into(),
        });
        let outcome = Outcome {
            verdict: &refused,
            conflicts: &[],
            service: None,
            failure: None,
            listeners: &[],
        };
        let status = patch(&gw, &outcome, "t").expect("status");
        assert_eq!(
            status["status"]["conditions"][0]["reason"],
            "ListenersNotValid"
        );
        assert_eq!(status["status"]["conditions"][1]["status"], "False");

        let verdict = accepted();
        let taken = [ObjectKey::new(ObjectKind::Service, "shop", "wp")];
        let outcome = Outcome {
            verdict: &verdict,
            conflicts: &taken,
            service: None,
            failure: None,
            listeners: &[],
        };
        let status = patch(&gw, &outcome, "t").expect("status");
        let message = status["status"]["conditions"][1]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("Service shop/wp"), "{message}");

        let outcome = Outcome {
            verdict: &verdict,
            conflicts: &[],
            service: None,
            failure: Some((422, "Deployment shop/wp: invalid")),
            listeners: &[],
        };
        let status = patch(&gw, &outcome, "t").expect("status");
        assert_eq!(status["status"]["conditions"][1]["reason"], "Invalid");
        let not_ours = Verdict::NotOurs;
        let outcome = Outcome {
            verdict: &not_ours,
            ..outcome
        };
        assert_eq!(patch(&gw, &outcome, "t"), None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
