//! What `weftctl analyze` reports: a level, a code (istioctl's where one exists, weft's own
//! `WEFT…` otherwise), the object, the field and the text; printed as istioctl prints its
//! messages, or as JSON or YAML.
use std::fmt;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// A kind of message: its code and name, and what it means (the README's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    pub name: &'static str,
    pub meaning: &'static str,
}

macro_rules! codes {
    ($($id:ident = $code:literal, $name:literal, $meaning:literal;)*) => {
        $(pub const $id: Code = Code { code: $code, name: $name, meaning: $meaning };)*
        /// Every code `weftctl analyze` reports.
        pub const ALL: &[Code] = &[$($id),*];
    };
}

codes! {
    REFERENCED_RESOURCE_NOT_FOUND = "IST0101", "ReferencedResourceNotFound",
        "a Gateway a VirtualService binds to (Error), a route's destination host, a Gateway server's credentialName Secret or a Gateway API route's parent or backend (Warning) is not there";
    SCHEMA_VALIDATION_ERROR = "IST0106", "SchemaValidationError",
        "the object is refused (or the document is not an object): none of it applies";
    UNKNOWN_ANNOTATION = "IST0108", "UnknownAnnotation",
        "an istio.io annotation weft does not read, on an object weft reads";
    CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS = "IST0109", "ConflictingMeshGatewayVirtualServiceHosts",
        "two VirtualServices for the mesh claim the same host";
    PORT_NAME_NOT_UNDER_NAMING_CONVENTION = "IST0118", "PortNameIsNotUnderNamingConvention",
        "a Service port with neither appProtocol nor a <protocol>[-<suffix>] name";
    NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL = "IST0128", "NoServerCertificateVerificationDestinationLevel",
        "a DestinationRule originates TLS without caCertificates: the server is checked against the system's roots only";
    NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL = "IST0129", "NoServerCertificateVerificationPortLevel",
        "as IST0128, in portLevelSettings";
    SCHEMA_WARNING = "IST0133", "SchemaWarning",
        "a field the kind's schema does not have (misspelt?): ignored";
    CONFLICTING_GATEWAYS = "IST0145", "ConflictingGateways",
        "two Gateways of the same selector claim a host on the same port";
    INEFFECTIVE_POLICY = "IST0167", "IneffectivePolicy",
        "an AuthorizationPolicy attached to a Service or ServiceEntry that has no waypoint";
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS = "IST0173", "DestinationRuleSubsetNotSelectPods",
        "a subset's labels select none of the Service's pods among the objects analyzed";
    UNKNOWN_DESTINATION_RULE_HOST = "IST0174", "UnknownDestinationRuleHost",
        "a DestinationRule's host is no Service or ServiceEntry host";
    ADVISORY = "WEFT0000", "Advisory",
        "accepted, with a doubt weft explains (a setting weft applies differently, a provider the mesh config lacks, …)";
    FIELD_NOT_SUPPORTED = "WEFT0001", "FieldNotSupported",
        "a field weft accepts and does not act on (docs/CONFORMANCE.md)";
    KIND_NOT_READ = "WEFT0002", "KindNotRead",
        "a kind meant for Istio that weft does not read (Sidecar, EnvoyFilter, …): ignored";
    NO_WAYPOINT = "WEFT0003", "NoWaypoint",
        "L7 rules (a mesh VirtualService, a DestinationRule) for a host no waypoint serves";
    ADDRESS_CONFLICT = "WEFT0004", "ServiceEntryAddressConflict",
        "a ServiceEntry address another ServiceEntry or a Service's ClusterIP already claims";
    WAYPOINT_READS_NO_SECRETS = "WEFT0005", "WaypointReadsNoSecrets",
        "a DestinationRule's credentialName used by a waypoint, which reads no Secrets";
}

/// The object a message is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ObjectName {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub level: Level,
    pub code: &'static str,
    /// istioctl's name of the message (`ReferencedResourceNotFound`), or weft's.
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectName>,
    /// The JSON path of the field (`spec.gateways[0]`); empty for the whole object.
    pub field: String,
    pub text: String,
    /// `file:document` for objects read from files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Message {
    pub fn new(
        level: Level,
        code: Code,
        object: Option<ObjectName>,
        field: impl Into<String>,
        text: impl Into<String>,
        origin: Option<String>,
    ) -> Self {
        Message {
            level,
            code: code.code,
            name: code.name,
            object,
            field: field.into(),
            text: text.into(),
            origin,
        }
    }
}

/// As istioctl prints: `Error [IST0101] (VirtualService default/reviews file.yaml:2)
/// spec.gateways[0]: …`.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.code)?;
        let place: Vec<String> = self
            .object
            .iter()
            .map(ToString::to_string)
            .chain(self.origin.clone())
            .collect();
        if !place.is_empty() {
            write!(f, " ({})", place.join(" "))?;
        }
        if self.field.is_empty() {
            write!(f, " {}", self.text)
        } else {
            write!(f, " {}: {}", self.field, self.text)
        }
    }
}
