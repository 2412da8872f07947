//! What weft-cni and weft-agent say to each other (version 1).
//!
//! One request and one response per connection, each a frame of [`crate::wire`]: a JSON
//! object with a numeric `version` and a string `type`.
//!
//! - plugin → agent: `add`, `del` or `check` with the pod ([`PodSandbox`]); an `add` carries
//!   the pod's network namespace as a file descriptor. Or `status`, with nothing.
//! - agent → plugin: `captured` (the pod's programs, maps and listeners are in place),
//!   `not_in_mesh`, `not_captured` (CHECK of a mesh pod the agent does not capture),
//!   `done` (DEL, STATUS), or `refused` with a message and whether trying again may help.
//!
//! A peer of another `version` is answered with `refused` (`retry`: the agent of the next
//! release installs its own plugin). A later version must keep `version`, `type` and the
//! shape of `refused`, so that this one can still read why it is refused.
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const VERSION: u32 = 1;
/// The socket the agent answers on by default (its directory is root's, mode 0700).
pub const DEFAULT_SOCKET: &str = "/var/run/weft/cni.sock";

/// The pod a sandbox belongs to, as the runtime described it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandbox {
    /// `CNI_CONTAINERID`: the sandbox.
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID`, when the runtime passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The pod's addresses from the previous plugin's result: the API server learns them
    /// only after the sandbox is up, so the agent cannot read them there yet.
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    /// `CNI_NETNS` as the runtime named it, for messages (the namespace itself travels as
    /// a file descriptor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl PodSandbox {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Add(PodSandbox),
    Del(PodSandbox),
    Check(PodSandbox),
    Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Captured { pod: String },
    NotInMesh { pod: String },
    NotCaptured { pod: String, reason: String },
    Done,
    Refused { message: String, retry: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the peer speaks weft-cni protocol version {theirs}; this side speaks {ours}")]
    Version { ours: u32, theirs: u64 },
    #[error("not a weft-cni message: {0}")]
    Malformed(String),
}

/// `{"version": 1, "type": …, …}`.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.insert("version".into(), Value::from(VERSION));
    }
    // A Value always serializes.
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Reads a message, refusing another version before looking at the rest.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    let mut value: Value =
        serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| ProtocolError::Malformed("no numeric `version`".into()))?;
    if version != u64::from(VERSION) {
        return Err(ProtocolError::Version {
            ours: VERSION,
            theirs: version,
        });
    }
    if let Value::Object(fields) = &mut value {
        fields.remove("version");
    }
    serde_json::from_value(value).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> PodSandbox {
        PodSandbox {
            container_id: "4f1c".into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: Some("7d2e".into()),
            ips: vec!["10.244.1.7".parse().expect("ip")],
            netns: Some("/var/run/netns/cni-4f1c".into()),
        }
    }

    #[test]
    fn messages_round_trip_with_their_version() {
        for request in [
            Request::Add(sandbox()),
            Request::Del(sandbox()),
            Request::Check(sandbox()),
            Request::Status,
        ] {
            let bytes = encode(&request);
            let value: Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(value["version"], 1);
            assert_eq!(decode::<Request>(&bytes).expect("decodes"), request);
        }
        let refused = Response::Refused {
            message: "no".into(),
            retry: true,
        };
        assert_eq!(
            String::from_utf8(encode(&refused)).expect("utf-8"),
            r#"{"message":"no","retry":true,"type":"refused","version":1}"#
        );
        assert_eq!(
            decode::<Response>(&encode(&refused)).expect("decodes"),
            refused
        );
    }

    #[test]
    fn another_version_is_named() {
        let error = decode::<Request>(br#"{"version":2,"type":"teleport"}"#).expect_err("v2");
        assert!(matches!(error, ProtocolError::Version { theirs: 2, .. }));
        assert!(error.to_string().contains("version 2"), "{error}");
        assert!(matches!(
            decode::<Request>(br#"{"type":"status"}"#),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(br#"{"version":1,"type":"teleport"}"#),
            Err(ProtocolError::Malformed(_))
        ));
    }
}
