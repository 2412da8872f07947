//! What to do for a Gateway, for a namespace's trust bundle and for the waypoints' binding,
//! given what the cluster holds: the objects to apply (missing, or drifted from what the
//! controller writes), those to delete (made for a Gateway that no longer wants them), and
//! those left alone because someone else's object has the name.
//!
//! A Gateway the declaration's judge refuses keeps what was made for it, as the registry
//! keeps serving the last good version of a refused object; a Gateway that left weft's
//! classes loses it. A deleted Gateway needs nothing from here: its objects carry
//! ownerReferences, and the API server's garbage collector deletes them.
use std::collections::BTreeSet;

use serde_json::Value;

use crate::certificates::{ReferenceGrant, readable};
use crate::class::Class;
use crate::gateway::Gateway;
use crate::ingress;
use crate::object::{Existing, ObjectKey, ObjectKind};
use crate::waypoint::{self, Refusal, Settings};

/// What weft makes of a Gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not of a class weft's controllers handle: none of its business.
    NotOurs,
    /// Of weft's class, but nothing can be run for it.
    Refused(Refusal),
    /// Run: with what of the Gateway weft does not act on, said.
    Accepted { class: Class, warnings: Vec<String> },
}

impl Verdict {
    pub fn of(gateway: &Gateway) -> Verdict {
        match Class::of(&gateway.class_name) {
            None => Verdict::NotOurs,
            Some(class) => {
                let judged = match class {
                    Class::Waypoint => waypoint::judge(gateway),
                    Class::Ingress => ingress::judge(gateway),
                };
                match judged {
                    Ok(warnings) => Verdict::Accepted { class, warnings },
                    Err(refusal) => Verdict::Refused(refusal),
                }
            }
        }
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, Verdict::Accepted { .. })
    }
}

/// The objects that run a Gateway, as server-side apply bodies (none unless accepted).
/// What the lab runs for each Gateway of its manifests (no ReferenceGrants: an ingress
/// Gateway's certificates of other namespaces are not read there).
pub fn desired(gateway: &Gateway, settings: &Settings) -> (Verdict, Vec<(ObjectKind, Value)>) {
    desired_with(gateway, settings, &[])
}

/// [`desired`] with the cluster's ReferenceGrants, which decide which Secrets of other
/// namespaces an ingress gateway may read: what the controller keeps.
pub fn desired_with(
    gateway: &Gateway,
    settings: &Settings,
    grants: &[ReferenceGrant],
) -> (Verdict, Vec<(ObjectKind, Value)>) {
    let verdict = Verdict::of(gateway);
    let objects = match &verdict {
        Verdict::Accepted {
            class: Class::Waypoint,
            ..
        } => waypoint::objects(gateway, settings),
        Verdict::Accepted {
            class: Class::Ingress,
            ..
        } => ingress::objects(gateway, settings, &readable(gateway, grants)),
        Verdict::NotOurs | Verdict::Refused(_) => Vec::new(),
    };
    (verdict, objects)
}

/// A server-side apply of `body` to `key`. When the object exists, `body` carries its
/// `metadata.resourceVersion`: the API server refuses the write (409) if it changed since it
/// was read, so an object that stopped being ours meanwhile is not taken over.
#[derive(Clone, Debug, PartialEq)]
pub struct Apply {
    pub key: ObjectKey,
    pub body: Value,
}

/// A deletion, on condition that the object is still the one read (its uid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub key: ObjectKey,
    pub uid: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GatewayPlan {
    pub verdict: Verdict,
    pub apply: Vec<Apply>,
    pub delete: Vec<Delete>,
    /// Names taken by objects weft did not make: left alone, and the Gateway says so.
    pub conflicts: Vec<ObjectKey>,
}

/// What to do for `gateway`. `existing` answers for any object of a name the Gateway needs
/// (weft's or not); `owned` are the objects weft made with this Gateway as controller. A
/// Gateway being deleted gets nothing: the garbage collector is deleting what it owns, and
/// anything made again would only be collected again.
pub fn gateway<'a>(
    gateway: &Gateway,
    settings: &Settings,
    grants: &[ReferenceGrant],
    existing: impl Fn(&ObjectKey) -> Option<&'a Existing>,
    owned: &[Existing],
) -> GatewayPlan {
    let (verdict, objects) = desired_with(gateway, settings, grants);
    let mut plan = GatewayPlan {
        verdict,
        apply: Vec::new(),
        delete: Vec::new(),
        conflicts: Vec::new(),
    };
    if gateway.deleting {
        return plan;
    }
    let mut wanted = BTreeSet::new();
    for (kind, mut body) in objects {
        let key = ObjectKey::of(kind, &body);
        wanted.insert(key.clone());
        match existing(&key) {
            None => plan.apply.push(Apply { key, body }),
            Some(found) if !found.is_managed() => plan.conflicts.push(key),
            Some(found) if found.holds(&body) => {}
            Some(found) => {
                if let Some(version) = &found.resource_version {
                    body["metadata"]["resourceVersion"] = version.clone().into();
                }
                plan.apply.push(Apply { key, body });
            }
        }
    }
    // A refused Gateway keeps what it had; otherwise what is no longer wanted goes.
    if !matches!(plan.verdict, Verdict::Refused(_)) {
        let uid = gateway.uid.as_deref().unwrap_or_default();
        plan.delete = owned
            .iter()
            .filter(|o| o.is_managed() && !uid.is_empty() && o.made_for(uid))
            .filter(|o| !wanted.contains(&o.key))
            .map(|o| Delete {
                key: o.key.clone(),
                uid: o.uid.clone(),
            })
            .collect();
    }
    plan
}

/// What to do with the ConfigMap `weft-trust-bundle` of a namespace.
#[derive(Clone, Debug, PartialEq)]
pub enum NamespacePlan {
    Nothing,
    Apply(Apply),
    Delete(Delete),
}

/// The namespace's trust bundle: published while it has an accepted waypoint or ingress
/// gateway (whose pods need it as much) not being
/// deleted (`gateways` are all the namespace's Gateways), owned by each; deleted when none is
/// left and it is
/// weft's; a ConfigMap of that name that is not weft's (made by hand, as deploy/README
/// describes for clusters without the controller) is left alone.
pub fn trust_bundle(
    namespace: &str,
    gateways: &[&Gateway],
    existing: Option<&Existing>,
    pem: &str,
) -> NamespacePlan {
    let owners: Vec<&Gateway> = gateways
        .iter()
        .copied()
        // A Gateway being deleted owns nothing new: made again, the bundle would be
        // collected again, and a foreground deletion would wait for it forever.
        .filter(|g| g.namespace == namespace && g.uid.is_some() && !g.deleting)
        .filter(|g| Verdict::of(g).is_accepted())
        .collect();
    match existing {
        Some(found) if !found.is_managed() => NamespacePlan::Nothing,
        Some(found) if owners.is_empty() => NamespacePlan::Delete(Delete {
            key: found.key.clone(),
            uid: found.uid.clone(),
        }),
        None if owners.is_empty() => NamespacePlan::Nothing,
        found => {
            let mut body = waypoint::trust_bundle(namespace, &owners, pem);
            let key = ObjectKey::of(ObjectKind::ConfigMap, &body);
            match found {
                Some(found) if found.holds(&body) => NamespacePlan::Nothing,
                Some(found) => {
                    if let Some(version) = &found.resource_version {
                        body["metadata"]["resourceVersion"] = version.clone().into();
                    }
                    NamespacePlan::Apply(Apply { key, body })
                }
                None => NamespacePlan::Apply(Apply { key, body }),
            }
        }
    }
}

/// What to do with the waypoints' ClusterRoleBinding.
#[derive(Clone, Debug, PartialEq)]
pub enum BindingPlan {
    Unchanged,
    Apply(Apply),
    /// deploy/base creates it; without it waypoints cannot read the cluster.
    Missing,
}

/// Its subjects: the ServiceAccount of every accepted waypoint and ingress gateway
/// (`gateways` are all the cluster's Gateways), exactly: both read the cluster.
pub fn binding(gateways: &[&Gateway], existing: Option<&Existing>) -> BindingPlan {
    let waypoints: Vec<&Gateway> = gateways
        .iter()
        .copied()
        .filter(|g| Verdict::of(g).is_accepted())
        .collect();
    let mut body = waypoint::binding_subjects(&waypoints);
    let Some(found) = existing else {
        return BindingPlan::Missing;
    };
    let live = found
        .value
        .get("subjects")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    if live == body["subjects"] {
        return BindingPlan::Unchanged;
    }
    if let Some(version) = &found.resource_version {
        body["metadata"]["resourceVersion"] = version.clone().into();
    }
    BindingPlan::Apply(Apply {
        key: ObjectKey::of(ObjectKind::ClusterRoleBinding, &body),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::MANAGED_LABEL;
    use serde_json::json;

    fn waypoint_gateway(name: &str, uid: &str) -> Gateway {
        let mut value = waypoint::gateway_manifest(name, "shop", "service");
        value["metadata"]["uid"] = uid.into();
        Gateway::from_json(&value).expect("gateway")
    }

    /// What the API server would hold after applying `body` (with defaults added).
    fn stored(kind: ObjectKind, body: &Value, uid: &str) -> Existing {
        let mut value = body.clone();
        value["metadata"]["uid"] = uid.into();
        value["metadata"]["resourceVersion"] = "5".into();
        value["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        if kind == ObjectKind::Service {
            value["spec"]["clusterIP"] = "10.96.0.20".into();
        }
        Existing::from_json(kind, value)
    }

    fn plan_with(gw: &Gateway, existing: &[Existing]) -> GatewayPlan {
        gateway(
            gw,
            &Settings::default(),
            &[],
            |key| existing.iter().find(|e| &e.key == key),
            existing,
        )
    }

    #[test]
    fn a_new_waypoint_gets_its_three_objects_and_an_applied_one_nothing_more() {
        let gw = waypoint_gateway("wp", "g-1");
        let plan = plan_with(&gw, &[]);
        assert!(plan.verdict.is_accepted());
        let keys: Vec<String> = plan.apply.iter().map(|a| a.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "ServiceAccount shop/wp",
                "Deployment shop/wp",
                "Service shop/wp"
            ]
        );
        assert!(
            plan.apply
                .iter()
                .all(|a| a.body["metadata"].get("resourceVersion").is_none()),
            "creations carry no resourceVersion"
        );
        let existing: Vec<Existing> = plan
            .apply
            .iter()
            .map(|a| stored(a.key.kind, &a.body, "o"))
            .collect();
        let again = plan_with(&gw, &existing);
        assert!(
            again.apply.is_empty() && again.delete.is_empty(),
            "{again:?}"
        );
    }

    #[test]
    fn a_drifted_object_is_applied_again_over_the_version_read() {
        let gw = waypoint_gateway("wp", "g-1");
        let mut existing: Vec<Existing> = plan_with(&gw, &[])
            .apply
            .iter()
            .map(|a| stored(a.key.kind, &a.body, "o"))
            .collect();
        existing[1].value["spec"]["template"]["spec"]["containers"][0]["image"] =
            "someone/else:1".into();
        let plan = plan_with(&gw, &existing);
        assert_eq!(plan.apply.len(), 1);
        assert_eq!(plan.apply[0].key.to_string(), "Deployment shop/wp");
        assert_eq!(plan.apply[0].body["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn an_object_weft_did_not_make_is_left_alone_and_reported() {
        let gw = waypoint_gateway("wp", "g-1");
        let foreign = Existing::from_json(
            ObjectKind::Service,
            json!({"metadata": {"name": "wp", "namespace": "shop", "uid": "s"}}),
        );
        let plan = plan_with(&gw, std::slice::from_ref(&foreign));
        assert_eq!(plan.conflicts, std::slice::from_ref(&foreign.key));
        assert!(plan.apply.iter().all(|a| a.key != foreign.key));
    }

    #[test]
    fn a_gateway_that_leaves_the_class_loses_its_objects_and_a_refused_one_keeps_them() {
        let gw = waypoint_gateway("wp", "g-1");
        let made: Vec<Existing> = plan_with(&gw, &[])
            .apply
            .iter()
            .map(|a| stored(a.key.kind, &a.body, &format!("o-{}", a.key.kind.name())))
            .collect();
        let mut ingress = gw.clone();
        ingress.class_name = "nginx".into();
        let plan = plan_with(&ingress, &made);
        assert_eq!(plan.verdict, Verdict::NotOurs);
        assert!(plan.apply.is_empty());
        assert_eq!(plan.delete.len(), 3);
        assert_eq!(plan.delete[0].uid, "o-ServiceAccount");

        let mut refused = gw.clone();
        refused.listeners.clear();
        let plan = plan_with(&refused, &made);
        assert!(matches!(plan.verdict, Verdict::Refused(_)));
        assert!(plan.apply.is_empty() && plan.delete.is_empty());

        let mut going = gw.clone();
        going.deleting = true;
        let plan = plan_with(&going, &[]);
        assert!(
            plan.apply.is_empty(),
            "nothing made again for a Gateway being deleted"
        );

        // Another Gateway's objects are not this one's to delete.
        let other = waypoint_gateway("wp", "g-2");
        let mut other_class = other.clone();
        other_class.class_name = "nginx".into();
        assert!(plan_with(&other_class, &made).delete.is_empty());
    }

    #[test]
    fn the_trust_bundle_follows_the_namespaces_waypoints_unless_it_is_someone_elses() {
        let a = waypoint_gateway("a", "g-1");
        let NamespacePlan::Apply(apply) = trust_bundle("shop", &[&a], None, "PEM") else {
            panic!("a waypoint's namespace gets the bundle");
        };
        let ours = stored(ObjectKind::ConfigMap, &apply.body, "c-1");
        assert_eq!(
            trust_bundle("shop", &[&a], Some(&ours), "PEM"),
            NamespacePlan::Nothing
        );
        assert!(matches!(
            trust_bundle("shop", &[&a], Some(&ours), "NEW ROOT"),
            NamespacePlan::Apply(_)
        ));
        assert_eq!(
            trust_bundle("shop", &[], Some(&ours), "PEM"),
            NamespacePlan::Delete(Delete {
                key: ours.key.clone(),
                uid: "c-1".into()
            })
        );
        let mut by_hand = ours.clone();
        by_hand.value["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove(MANAGED_LABEL);
        assert_eq!(
            trust_bundle("shop", &[&a], Some(&by_hand), "OTHER"),
            NamespacePlan::Nothing
        );
        assert_eq!(
            trust_bundle("shop", &[], None, "PEM"),
            NamespacePlan::Nothing
        );
        let mut going = a.clone();
        going.deleting = true;
        assert_eq!(
            trust_bundle("shop", &[&going], None, "PEM"),
            NamespacePlan::Nothing,
            "not made again for a Gateway being deleted"
        );
    }

    #[test]
    fn the_binding_names_exactly_the_accepted_waypoints() {
        let a = waypoint_gateway("a", "g-1");
        let mut refused = waypoint_gateway("b", "g-2");
        refused.listeners.clear();
        let live = Existing::from_json(
            ObjectKind::ClusterRoleBinding,
            json!({"metadata": {"name": "weft-waypoints", "resourceVersion": "3"},
                   "roleRef": {"kind": "ClusterRole", "name": "weft-waypoint"}}),
        );
        let BindingPlan::Apply(apply) = binding(&[&a, &refused], Some(&live)) else {
            panic!("subjects to add");
        };
        assert_eq!(
            apply.body["subjects"],
            json!([{"kind": "ServiceAccount", "name": "a", "namespace": "shop"}])
        );
        assert_eq!(apply.body["metadata"]["resourceVersion"], "3");
        let mut current = live.clone();
        current.value["subjects"] = apply.body["subjects"].clone();
        assert_eq!(binding(&[&a], Some(&current)), BindingPlan::Unchanged);
        assert_eq!(binding(&[&a], None), BindingPlan::Missing);
    }
}
