//! Which Gateways the controller acts on, by `spec.gatewayClassName`, and how it marks what
//! it creates for each class.
//!
//! Waypoints ([`crate::waypoint`]) and ingress gateways ([`crate::ingress`]); each class
//! has its objects and its arm in [`crate::reconcile::desired`]; the driver, the status and
//! the garbage collection are the same for every class.
use weft_core::mesh::waypoint::{INGRESS_CLASSES, WAYPOINT_CLASSES};

/// Istio's label on every object its gateway controller manages; its value names the
/// controller. An object of the right name without this label (and our value) is someone
/// else's, and is left alone.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";

/// The server-side apply field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "weft-controller";

/// The label naming the class of the Gateway an object was made for (Istio's).
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `istio-waypoint` and `weft-waypoint`: a weft-waypoint Deployment and its Service.
    Waypoint,
    /// `istio` and `weft`: an ingress gateway (`weft-waypoint --mode ingress`) serving the
    /// Gateway's listeners, and its Service of type LoadBalancer.
    Ingress,
}

impl Class {
    /// Every class, for the driver's label selector.
    pub const ALL: [Class; 2] = [Class::Waypoint, Class::Ingress];

    /// The class a Gateway of `gatewayClassName` belongs to, `None` when no controller of
    /// weft's handles it (an ingress controller's, say).
    pub fn of(class_name: &str) -> Option<Class> {
        if WAYPOINT_CLASSES.contains(&class_name) {
            Some(Class::Waypoint)
        } else if INGRESS_CLASSES.contains(&class_name) {
            Some(Class::Ingress)
        } else {
            None
        }
    }

    /// The value of [`MANAGED_LABEL`] on what is created for this class (Istio writes
    /// `istio.io-mesh-controller` for its waypoints).
    pub fn managed_value(self) -> &'static str {
        match self {
            Class::Waypoint => "weft.io-waypoint-controller",
            // Istio writes `istio.io-gateway-controller` for its ingress gateways.
            Class::Ingress => "weft.io-gateway-controller",
        }
    }

    /// Whether `value` of [`MANAGED_LABEL`] is one of weft's.
    pub fn is_ours(value: &str) -> bool {
        Self::ALL.iter().any(|c| c.managed_value() == value)
    }

    /// The label selector matching everything weft's controllers manage.
    pub fn managed_selector() -> String {
        let values: Vec<&str> = Self::ALL.iter().map(|c| c.managed_value()).collect();
        format!("{MANAGED_LABEL} in ({})", values.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waypoint_and_ingress_classes_are_ours_and_others_are_not() {
        assert_eq!(Class::of("istio-waypoint"), Some(Class::Waypoint));
        assert_eq!(Class::of("weft-waypoint"), Some(Class::Waypoint));
        assert_eq!(
            Class::of("istio"),
            Some(Class::Ingress),
            "Istio's ingress class"
        );
        assert_eq!(Class::of("weft"), Some(Class::Ingress));
        assert_eq!(Class::of("nginx"), None);
        assert!(Class::is_ours("weft.io-waypoint-controller"));
        assert!(Class::is_ours("weft.io-gateway-controller"));
        assert!(!Class::is_ours("istio.io-mesh-controller"));
        assert_eq!(
            Class::managed_selector(),
            "gateway.istio.io/managed in (weft.io-waypoint-controller,weft.io-gateway-controller)"
        );
    }
}
