//! The status an HTTPRoute or GRPCRoute reports (Gateway API conditions per parent), from
//! what resolving it found, as Istio's `createRouteStatus` words it:
//!
//! - one entry per parentRef weft judges (Services, and Gateways of weft's classes), under
//!   `controllerName` [`ROUTE_CONTROLLER`]; entries of other controllers are kept as they
//!   are, weft's entries for parents no longer listed are removed;
//! - `Accepted`: `True` (`Accepted`, "Route was valid"), or `False` with the parent's
//!   reason (`NoMatchingParent`, `NotAllowedByListeners`, `NoMatchingListenerHostname`);
//! - `ResolvedRefs`: `True` (`ResolvedRefs`, "All references resolved"), or `False` with
//!   the first unusable reference's reason (`RefNotPermitted`, `BackendNotFound`,
//!   `InvalidKind`) and every such reference's message;
//! - for a Service parent, `ResolvedWaypoints`: whether the Service (or its namespace)
//!   names a waypoint. Istio leaves this `True` and only changes the message; weft says
//!   `False` (`MissingUseWaypointLabel`), since no proxy applies the route then.
//!
//! `lastTransitionTime` moves only when a condition's status does; [`patch`] returns
//! nothing when the status already says this, so writing it does not cause another write.
use serde_json::{Value, json};

use super::gateway_routes::{ParentOutcome, ROUTE_CONTROLLER, RouteResolution};
use crate::api::gateway_api::GATEWAY_API_GROUP;
use crate::api::gateway_routes::{Condition, ParentReference, RouteParentStatus};

/// The conditions weft reports for one parent, before times are given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentConditions {
    pub parent: ParentReference,
    /// (type, status, reason, message)
    pub conditions: Vec<(&'static str, bool, String, String)>,
}

/// Whether two parentRefs name the same parent once the API server's defaults are filled
/// in (group and kind of a Gateway, the route's namespace).
pub fn same_parent(a: &ParentReference, b: &ParentReference, namespace: &str) -> bool {
    let normal = |p: &ParentReference| {
        (
            p.group
                .clone()
                .unwrap_or_else(|| GATEWAY_API_GROUP.to_string()),
            p.kind.clone().unwrap_or_else(|| "Gateway".to_string()),
            p.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            p.name.clone(),
            p.section_name.clone().unwrap_or_default(),
            p.port,
        )
    };
    normal(a) == normal(b)
}

/// What weft says about each parent it judges, in the order of `parentRefs` (a parent
/// listed twice once).
pub fn conditions(resolution: &RouteResolution) -> Vec<ParentConditions> {
    let namespace = resolution.route.namespace();
    let issues: Vec<_> = resolution.backends.issues().collect();
    let resolved_refs = match issues.first() {
        None => (
            "ResolvedRefs",
            true,
            "ResolvedRefs".to_string(),
            "All references resolved".to_string(),
        ),
        Some((_, first)) => (
            "ResolvedRefs",
            false,
            first.reason.to_string(),
            issues
                .iter()
                .map(|(at, issue)| format!("{}: {}", at.field(), issue.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let mut found: Vec<ParentConditions> = Vec::new();
    for parent in &resolution.parents {
        if found
            .iter()
            .any(|f| same_parent(&f.parent, &parent.reference, namespace))
        {
            continue;
        }
        let accepted = match &parent.outcome {
            ParentOutcome::NotOurs { .. } => continue,
            ParentOutcome::Refused { reason, message } => {
                ("Accepted", false, reason.to_string(), message.clone())
            }
            ParentOutcome::Service { .. } => (
                "Accepted",
                true,
                "Accepted".to_string(),
                "Route was valid".to_string(),
            ),
            // Accepted even where older routes take every connection it would (the
            // Gateway API's conformance asks it, istiod does it); the message says where.
            ParentOutcome::Gateway {
                namespace,
                name,
                listeners,
            } => {
                let gateway = format!("{namespace}/{name}");
                let notes: Vec<String> = resolution
                    .shadowed
                    .iter()
                    .filter(|s| {
                        s.complete && s.gateway == gateway && listeners.contains(&s.listener)
                    })
                    .map(|s| s.describe())
                    .collect();
                let message = if notes.is_empty() {
                    "Route was valid".to_string()
                } else {
                    format!("Route was valid, but {}", notes.join("; "))
                };
                ("Accepted", true, "Accepted".to_string(), message)
            }
        };
        let mut conditions = vec![accepted, resolved_refs.clone()];
        if let ParentOutcome::Service { service, .. } = &parent.outcome {
            conditions.push(match &service.waypoint {
                Some(waypoint) => (
                    "ResolvedWaypoints",
                    true,
                    "ResolvedWaypoints".to_string(),
                    format!(
                        "All waypoints resolved: {}/{}",
                        waypoint.namespace, waypoint.name
                    ),
                ),
                None => (
                    "ResolvedWaypoints",
                    false,
                    "MissingUseWaypointLabel".to_string(),
                    "istio.io/use-waypoint label missing from parent and parent namespace; in ambient mode, route will not be respected".to_string(),
                ),
            });
        }
        found.push(ParentConditions {
            parent: parent.reference.clone(),
            conditions,
        });
    }
    found
}

/// The merge patch of the route's `status`, or `None` when it already says this. `now` is
/// an RFC 3339 time.
pub fn patch(resolution: &RouteResolution, now: &str) -> Option<Value> {
    let route = &resolution.route;
    let namespace = route.namespace();
    let generation = route.metadata().generation;
    let current: Vec<RouteParentStatus> = route
        .status()
        .map(|s| s.parents.clone())
        .unwrap_or_default();
    let ours = |p: &RouteParentStatus| p.controller_name == ROUTE_CONTROLLER;
    let wanted = conditions(resolution);
    let entry = |wanted: &ParentConditions| -> RouteParentStatus {
        let existing = current
            .iter()
            .find(|p| ours(p) && same_parent(&p.parent_ref, &wanted.parent, namespace));
        let conditions = wanted
            .conditions
            .iter()
            .map(|(type_, status, reason, message)| {
                let status = if *status { "True" } else { "False" };
                let since = existing
                    .and_then(|e| e.conditions.iter().find(|c| c.type_ == *type_))
                    .filter(|c| c.status == status && !c.last_transition_time.is_empty())
                    .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
                Condition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    reason: reason.clone(),
                    message: message.clone(),
                    observed_generation: generation,
                    last_transition_time: since,
                }
            })
            .collect();
        RouteParentStatus {
            parent_ref: wanted.parent.clone(),
            controller_name: ROUTE_CONTROLLER.to_string(),
            conditions,
        }
    };
    // Other controllers' entries stay where they are; weft's are replaced in place, new
    // ones appended, stale ones dropped.
    let mut parents: Vec<RouteParentStatus> = Vec::new();
    let mut placed = vec![false; wanted.len()];
    for existing in &current {
        if !ours(existing) {
            parents.push(existing.clone());
            continue;
        }
        if let Some(i) = wanted
            .iter()
            .position(|w| same_parent(&w.parent, &existing.parent_ref, namespace))
            && !placed[i]
        {
            placed[i] = true;
            parents.push(entry(&wanted[i]));
        }
    }
    for (i, w) in wanted.iter().enumerate() {
        if !placed[i] {
            parents.push(entry(w));
        }
    }
    let same = |a: &RouteParentStatus, b: &RouteParentStatus| {
        a.controller_name == b.controller_name
            && same_parent(&a.parent_ref, &b.parent_ref, namespace)
            && a.conditions.len() == b.conditions.len()
            && a.conditions.iter().zip(&b.conditions).all(|(x, y)| {
                x.type_ == y.type_
                    && x.status == y.status
                    && x.reason == y.reason
                    && x.message == y.message
                    && x.observed_generation == y.observed_generation
            })
    };
    let unchanged =
        parents.len() == current.len() && parents.iter().zip(&current).all(|(a, b)| same(a, b));
    if unchanged {
        return None;
    }
    Some(json!({"status": {"parents": parents}}))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::api::gateway_routes::{HttpRoute, RouteStatus};
    use crate::registry::bound_route::{GatewayRoute, RefAt, RefIssue, RouteBackends};
    use crate::registry::model::{Service, WaypointRef};
    use crate::translate::gateway_routes::ParentResult;

    fn route(status: Option<RouteStatus>) -> GatewayRoute {
        let mut route: HttpRoute = serde_yaml::from_str(
            "metadata: {name: r, namespace: shop, generation: 3}\nspec: {parentRefs: [{group: '', kind: Service, name: reviews}, {name: other-gw}]}",
        )
        .expect("route");
        route.status = status;
        GatewayRoute::Http(Arc::new(route))
    }

    fn service(waypoint: bool) -> Arc<Service> {
        Arc::new(Service {
            name: "reviews".into(),
            namespace: "shop".into(),
            hostname: "reviews.shop.svc.cluster.local".into(),
            vips: Vec::new(),
            ports: Vec::new(),
            selector: None,
            labels: BTreeMap::new(),
            endpoints: Vec::new().into(),
            traffic_distribution: Default::default(),
            waypoint: waypoint.then(|| WaypointRef {
                name: "waypoint".into(),
                namespace: "shop".into(),
            }),
        })
    }

    fn resolution(route: GatewayRoute, waypoint: bool, refused_ref: bool) -> RouteResolution {
        let parents = route.parent_refs().to_vec();
        let mut refs = BTreeMap::new();
        if refused_ref {
            refs.insert(
                RefAt::Backend {
                    rule: 0,
                    backend: 0,
                },
                Err(RefIssue {
                    reason: "RefNotPermitted",
                    message: "no grant".into(),
                }),
            );
        }
        RouteResolution {
            route,
            parents: vec![
                ParentResult {
                    reference: parents[0].clone(),
                    outcome: ParentOutcome::Service {
                        service: service(waypoint),
                        port: None,
                    },
                },
                ParentResult {
                    reference: parents[1].clone(),
                    outcome: ParentOutcome::NotOurs {
                        note: "someone else's".into(),
                    },
                },
            ],
            backends: Arc::new(RouteBackends { refs }),
            shadowed: Vec::new(),
        }
    }

    fn conditions_of(patch: &Value) -> Vec<(String, String, String)> {
        patch["status"]["parents"][0]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn an_ingress_gateway_parent_is_accepted_where_its_listeners_take_the_route() {
        let mut resolved = resolution(route(None), true, false);
        resolved.parents[0].outcome = ParentOutcome::Gateway {
            namespace: "shop".into(),
            name: "ingress".into(),
            listeners: vec!["http".into()],
        };
        let patch = patch(&resolved, "t0").expect("a patch");
        assert_eq!(
            conditions_of(&patch),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
            ],
            "no ResolvedWaypoints for a Gateway: {patch}"
        );
    }

    #[test]
    fn a_service_parent_is_accepted_with_its_references_and_waypoint() {
        let patch = patch(&resolution(route(None), true, false), "t0").expect("a patch");
        let parents = patch["status"]["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 1, "the other parent is not weft's: {patch}");
        assert_eq!(parents[0]["controllerName"], ROUTE_CONTROLLER);
        assert_eq!(parents[0]["parentRef"]["kind"], "Service");
        assert_eq!(parents[0]["conditions"][0]["observedGeneration"], 3);
        assert_eq!(
            conditions_of(&patch),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
                (
                    "ResolvedWaypoints".into(),
                    "True".into(),
                    "ResolvedWaypoints".into()
                ),
            ]
        );
        let refused = patch_of(&resolution(route(None), false, true));
        assert_eq!(
            conditions_of(&refused),
            [
                ("Accepted".into(), "True".into(), "Accepted".into()),
                (
                    "ResolvedRefs".into(),
                    "False".into(),
                    "RefNotPermitted".into()
                ),
                (
                    "ResolvedWaypoints".into(),
                    "False".into(),
                    "MissingUseWaypointLabel".into()
                ),
            ]
        );
    }

    fn patch_of(resolution: &RouteResolution) -> Value {
        patch(resolution, "t0").expect("a patch")
    }

    #[test]
    fn a_status_that_already_says_it_is_not_written_again_and_times_move_on_change() {
        let first = patch_of(&resolution(route(None), true, false));
        let written: RouteStatus =
            serde_json::from_value(first["status"].clone()).expect("a status");
        // As the API server would hold it: defaults filled in, another controller's entry.
        let mut held = written.clone();
        held.parents[0].parent_ref.namespace = Some("shop".into());
        held.parents.insert(
            0,
            RouteParentStatus {
                parent_ref: ParentReference {
                    name: "other-gw".into(),
                    ..Default::default()
                },
                controller_name: "example.com/other".into(),
                conditions: Vec::new(),
            },
        );
        assert_eq!(
            patch(&resolution(route(Some(held.clone())), true, false), "t1"),
            None
        );
        // A reference goes bad: ResolvedRefs moves (new time), Accepted keeps its time,
        // the other controller's entry stays first.
        let changed = patch(&resolution(route(Some(held)), true, true), "t1").expect("a patch");
        let parents = changed["status"]["parents"].as_array().expect("parents");
        assert_eq!(parents[0]["controllerName"], "example.com/other");
        let conditions = &parents[1]["conditions"];
        assert_eq!(conditions[0]["lastTransitionTime"], "t0");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["lastTransitionTime"], "t1");
    }
}
