//! The CNI specification's side of the plugin, without input or output of its own: the
//! environment a runtime sets, `CNI_ARGS`, the network configuration on stdin (with the
//! previous plugin's result), the result passed on, and errors in the form runtimes read.
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The `type` of weft's entry in a configuration list (and the binary's name).
pub const PLUGIN_TYPE: &str = "weft-cni";

/// The versions of the specification this plugin implements. 0.3.0 is the first with the
/// result format read here (`ips` with `interface` indexes); GC and STATUS are 1.1.0's.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version reported when the configuration names none (VERSION without stdin, errors
/// before the configuration could be read).
pub const DEFAULT_VERSION: &str = "1.0.0";

/// Error codes of the specification, and this plugin's own (100 and up).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition: the runtime should try again later (spec 1.0).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now (spec 1.1).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The agent refused to capture the pod, for a reason that will not pass by itself.
    pub const AGENT_REFUSED: u32 = 100;
    /// CHECK: the pod belongs to the mesh but is not captured.
    pub const NOT_CAPTURED: u32 = 101;
}

/// An error as the specification has the plugin print it on stdout (exit status 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// `{"cniVersion", "code", "msg", "details"}`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut error = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            error["details"] = Value::String(self.details.clone());
        }
        error
    }
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// 1.1: is the plugin ready to serve ADD?
    Status,
    /// 1.1: forget attachments the runtime no longer has.
    Gc,
}

impl Command {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    /// The container's network namespace, as a path the runtime opened it by.
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`, as given.
    pub args: String,
}

impl Invocation {
    /// Reads the variables through `var` (the process environment in the binary), checking
    /// that the command has what the specification requires of it.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let nonempty = |name: &str| var(name).filter(|v| !v.is_empty());
        let command_text = nonempty("CNI_COMMAND").ok_or_else(|| {
            CniError::new(codes::INVALID_ENVIRONMENT, "CNI_COMMAND is not set").with_details(
                "weft-cni is a CNI plugin: the container runtime runs it, as the specification \
                 says (https://www.cni.dev/docs/spec/)",
            )
        })?;
        let command = Command::parse(&command_text).ok_or_else(|| {
            CniError::new(
                codes::INVALID_ENVIRONMENT,
                format!("unknown CNI_COMMAND {command_text:?}"),
            )
        })?;
        let invocation = Self {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname: nonempty("CNI_IFNAME"),
            args: var("CNI_ARGS").unwrap_or_default(),
        };
        let required: &[(&str, bool)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", invocation.container_id.is_some()),
                ("CNI_NETNS", invocation.netns.is_some()),
                ("CNI_IFNAME", invocation.ifname.is_some()),
            ],
            Command::Del => &[
                ("CNI_CONTAINERID", invocation.container_id.is_some()),
                ("CNI_IFNAME", invocation.ifname.is_some()),
            ],
            Command::Version | Command::Status | Command::Gc => &[],
        };
        if let Some((name, _)) = required.iter().find(|(_, present)| !present) {
            return Err(CniError::new(
                codes::INVALID_ENVIRONMENT,
                format!("{name} is required for {command_text}"),
            ));
        }
        Ok(invocation)
    }
}

/// The pod, from the `K8S_*` keys the kubelet's runtime puts in `CNI_ARGS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID` (containerd 1.6+, CRI-O); absent from older runtimes.
    pub uid: Option<String>,
}

/// Reads `CNI_ARGS` (`KEY=VALUE;KEY=VALUE`). `None` when it does not name a Kubernetes pod
/// (a container some other tool created): weft captures only pods.
pub fn pod_args(cni_args: &str) -> Result<Option<PodArgs>, CniError> {
    let mut pod = PodArgs::default();
    for pair in cni_args.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                codes::INVALID_ENVIRONMENT,
                format!("CNI_ARGS has {pair:?}, which is not KEY=VALUE"),
            )
        })?;
        match key {
            "K8S_POD_NAMESPACE" => pod.namespace = value.to_string(),
            "K8S_POD_NAME" => pod.name = value.to_string(),
            "K8S_POD_UID" if !value.is_empty() => pod.uid = Some(value.to_string()),
            // K8S_POD_INFRA_CONTAINER_ID is CNI_CONTAINERID again; IgnoreUnknown and the
            // keys of other plugins are not ours.
            _ => {}
        }
    }
    Ok((!pod.namespace.is_empty() && !pod.name.is_empty()).then_some(pod))
}

/// What weft-cni reads of its network configuration (stdin). The runtime adds `name`,
/// `cniVersion` and `prevResult` to weft's entry of the configuration list.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The agent's socket (written by the agent when it installs the entry).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// How long to wait for the agent's answer to ADD, in seconds.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// Longest `timeoutSeconds` accepted: the kubelet gives a sandbox 4 minutes.
pub const MAX_TIMEOUT_SECONDS: u64 = 120;

/// Reads the network configuration. For VERSION only `cniVersion` matters and an empty
/// stdin is allowed, so this is not called for it.
pub fn net_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            codes::DECODE_FAILURE,
            "the network configuration on stdin is not valid",
        )
        .with_details(e.to_string())
    })?;
    if !is_supported(&conf.cni_version) {
        return Err(incompatible(&conf.cni_version));
    }
    if conf.plugin_type != PLUGIN_TYPE {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            format!(
                "the configuration is for plugin type {:?}, not {PLUGIN_TYPE:?}",
                conf.plugin_type
            ),
        ));
    }
    if let Some(seconds) = conf.timeout_seconds
        && !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds)
    {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            format!("timeoutSeconds is {seconds}; it must be 1 to {MAX_TIMEOUT_SECONDS}"),
        ));
    }
    Ok(conf)
}

fn incompatible(version: &str) -> CniError {
    CniError::new(
        codes::INCOMPATIBLE_VERSION,
        format!("weft-cni does not implement CNI version {version:?}"),
    )
    .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", ")))
}

/// `major.minor.patch` as numbers; `None` for anything else.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// Whether `command` exists in `version` of the specification (CHECK from 0.4.0, GC and
/// STATUS from 1.1.0).
pub fn command_in_version(command: Command, version: &str) -> Result<(), CniError> {
    let since = match command {
        Command::Check => (0, 4, 0),
        Command::Status | Command::Gc => (1, 1, 0),
        _ => return Ok(()),
    };
    match parse_version(version) {
        Some(v) if v >= since => Ok(()),
        _ => Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "{command:?} is not part of CNI version {version}; it came with {}.{}.{}",
                since.0, since.1, since.2
            ),
        )),
    }
}

/// The answer to VERSION.
pub fn version_info() -> Value {
    json!({"cniVersion": DEFAULT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The pod's addresses in the previous plugin's result: each of `ips` that belongs to an
/// interface inside the container (one with a `sandbox`), or to no interface in particular.
/// Addresses of host-side interfaces (the node's end of a veth) are left out.
pub fn pod_ips(prev_result: &Value) -> Result<Vec<IpAddr>, CniError> {
    let invalid = |what: String| {
        CniError::new(codes::DECODE_FAILURE, "prevResult is not a CNI result").with_details(what)
    };
    let interfaces = prev_result.get("interfaces").and_then(Value::as_array);
    let in_sandbox = |index: u64| {
        interfaces
            .and_then(|all| all.get(usize::try_from(index).ok()?))
            .and_then(|interface| interface.get("sandbox"))
            .and_then(Value::as_str)
            .is_some_and(|sandbox| !sandbox.is_empty())
    };
    let mut ips = Vec::new();
    let Some(entries) = prev_result.get("ips") else {
        return Ok(ips);
    };
    let entries = entries
        .as_array()
        .ok_or_else(|| invalid("`ips` is not a list".into()))?;
    for entry in entries {
        let address = entry
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("an entry of `ips` has no address: {entry}")))?;
        let ip_text = address.split_once('/').map_or(address, |(ip, _)| ip);
        let ip: IpAddr = ip_text
            .parse()
            .map_err(|_| invalid(format!("{address:?} is not an address in CIDR form")))?;
        let ours =
            match entry.get("interface") {
                None | Some(Value::Null) => true,
                Some(index) => in_sandbox(index.as_u64().ok_or_else(|| {
                    invalid(format!("the interface index {index} is not a number"))
                })?),
            };
        if ours && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// What a chained plugin that changes nothing of the network prints: the previous result,
/// in the configuration's version; an empty result when there is none.
pub fn pass_through(conf: &NetConf) -> Value {
    let mut result = match &conf.prev_result {
        Some(Value::Object(previous)) => previous.clone(),
        _ => Map::new(),
    };
    result.insert(
        "cniVersion".to_string(),
        Value::String(conf.cni_version.clone()),
    );
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn an_add_needs_its_container_netns_and_interface() {
        let add = Invocation::from_vars(vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=web"),
        ]))
        .expect("complete");
        assert_eq!(add.command, Command::Add);
        assert_eq!(add.netns, Some(PathBuf::from("/var/run/netns/cni-1")));
        let missing = Invocation::from_vars(vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect_err("no netns");
        assert_eq!(missing.code, codes::INVALID_ENVIRONMENT);
        assert!(missing.msg.contains("CNI_NETNS"), "{missing}");
        // DEL may come after the namespace is gone.
        let del = Invocation::from_vars(vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("DEL without a netns");
        assert_eq!(del.netns, None);
        let version = Invocation::from_vars(vars(&[("CNI_COMMAND", "VERSION")])).expect("VERSION");
        assert_eq!(version.command, Command::Version);
        let unknown =
            Invocation::from_vars(vars(&[("CNI_COMMAND", "UP")])).expect_err("unknown command");
        assert_eq!(unknown.code, codes::INVALID_ENVIRONMENT);
        let none = Invocation::from_vars(vars(&[])).expect_err("run by hand");
        assert!(none.details.contains("container runtime"), "{none}");
    }

    #[test]
    fn cni_args_name_the_pod() {
        let pod = pod_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1b4e-22",
        )
        .expect("valid")
        .expect("a pod");
        assert_eq!(
            pod,
            PodArgs {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: Some("1b4e-22".into()),
            }
        );
        let old_runtime = pod_args("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0")
            .expect("valid")
            .expect("a pod");
        assert_eq!(old_runtime.uid, None);
        assert_eq!(pod_args("").expect("valid"), None, "not a Kubernetes pod");
        assert_eq!(pod_args("K8S_POD_NAME=x").expect("valid"), None);
        assert_eq!(
            pod_args("K8S_POD_NAME").expect_err("no value").code,
            codes::INVALID_ENVIRONMENT
        );
    }

    #[test]
    fn the_configuration_is_checked() {
        let conf = net_conf(
            br#"{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"weft-cni",
                 "socket":"/var/run/weft/cni.sock","prevResult":{"ips":[]}}"#,
        )
        .expect("valid");
        assert_eq!(conf.socket, Some(PathBuf::from("/var/run/weft/cni.sock")));
        assert!(conf.prev_result.is_some());
        let old = net_conf(br#"{"cniVersion":"0.2.0","type":"weft-cni"}"#).expect_err("0.2.0");
        assert_eq!(old.code, codes::INCOMPATIBLE_VERSION);
        assert!(old.details.contains("1.0.0"), "{old}");
        let other = net_conf(br#"{"cniVersion":"1.0.0","type":"bridge"}"#).expect_err("bridge");
        assert_eq!(other.code, codes::INVALID_CONFIG);
        let garbled = net_conf(b"{").expect_err("not JSON");
        assert_eq!(garbled.code, codes::DECODE_FAILURE);
        let slow = net_conf(br#"{"cniVersion":"1.0.0","type":"weft-cni","timeoutSeconds":0}"#)
            .expect_err("zero");
        assert_eq!(slow.code, codes::INVALID_CONFIG);
    }

    #[test]
    fn commands_belong_to_versions() {
        assert!(command_in_version(Command::Check, "0.4.0").is_ok());
        assert_eq!(
            command_in_version(Command::Check, "0.3.1")
                .expect_err("CHECK came with 0.4.0")
                .code,
            codes::INCOMPATIBLE_VERSION
        );
        assert!(command_in_version(Command::Status, "1.0.0").is_err());
        assert!(command_in_version(Command::Gc, "1.1.0").is_ok());
        assert!(command_in_version(Command::Add, "0.3.0").is_ok());
        assert_eq!(parse_version("1.10.2"), Some((1, 10, 2)));
        assert_eq!(parse_version("1.0"), None);
        assert_eq!(version_info()["supportedVersions"][3], "1.0.0");
    }

    #[test]
    fn the_pods_addresses_are_those_inside_the_sandbox() {
        // As the bridge plugin reports them: the host's bridge, the host's veth end, the
        // pod's interface; addresses on the pod's interface.
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                {"name": "veth1", "mac": "aa:bb:cc:00:00:02"},
                {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": "/var/run/netns/cni-1"},
            ],
            "ips": [
                {"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 2},
                {"address": "fd00:10:244:1::7/64", "interface": 2},
                {"address": "10.244.1.1/24", "interface": 0},
                {"address": "10.244.1.7/24"},
            ],
        });
        assert_eq!(
            pod_ips(&result).expect("valid"),
            [
                "10.244.1.7".parse::<IpAddr>().expect("ip"),
                "fd00:10:244:1::7".parse().expect("ip")
            ]
        );
        // 0.3.x results carry a "version" per address; no `ips` at all is no address.
        let v031 = json!({"ips": [{"version": "4", "address": "10.1.0.5/16"}]});
        assert_eq!(pod_ips(&v031).expect("valid").len(), 1);
        assert!(pod_ips(&json!({})).expect("valid").is_empty());
        let broken = json!({"ips": [{"address": "10.1.0.500/16"}]});
        assert_eq!(
            pod_ips(&broken).expect_err("bad address").code,
            codes::DECODE_FAILURE
        );
    }

    #[test]
    fn the_previous_result_is_passed_on_in_the_configurations_version() {
        let conf = NetConf {
            cni_version: "0.4.0".into(),
            name: "net".into(),
            plugin_type: PLUGIN_TYPE.into(),
            socket: None,
            timeout_seconds: None,
            prev_result: Some(
                json!({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}],
                                     "dns": {"nameservers": ["10.96.0.10"]}}),
            ),
        };
        let out = pass_through(&conf);
        assert_eq!(out["ips"][0]["address"], "10.0.0.2/24");
        assert_eq!(out["dns"]["nameservers"][0], "10.96.0.10");
        assert_eq!(out["cniVersion"], "0.4.0");
        let first = NetConf {
            prev_result: None,
            ..conf
        };
        assert_eq!(pass_through(&first), json!({"cniVersion": "0.4.0"}));
    }

    #[test]
    fn errors_print_as_the_specification_says() {
        let error = CniError::new(codes::TRY_AGAIN_LATER, "the agent is away").with_details("x");
        assert_eq!(
            error.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "the agent is away", "details": "x"})
        );
        assert_eq!(error.to_string(), "the agent is away: x");
    }
}
