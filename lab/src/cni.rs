//! The lab's part of a container runtime's CNI: each node has a configuration directory and
//! a binary directory, as a cluster node has `/etc/cni/net.d` and `/opt/cni/bin`, holding a
//! configuration list whose first plugin, `lab-veth`, stands for what the lab does itself
//! (the pod's veth, addresses and routes). Whatever another party chains after it — weft's
//! agent chains weft-cni — the lab runs for each pod it starts, before the pod's processes,
//! the way containerd does through libcni: the first configuration file of the directory by
//! name; each plugin's binary from the binary directory with `CNI_COMMAND`,
//! `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` (the kubelet's `K8S_POD_*`) and
//! `CNI_PATH`; on stdin the plugin's entry with the list's `name` and `cniVersion` and the
//! previous plugin's result as `prevResult`; its result or error as JSON on stdout. A
//! failed ADD is undone with DEL of the whole list, in reverse.
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::LabError;
use crate::plan::{POD_GATEWAY, POD_GATEWAY6};

/// The plugin that stands for what the lab does itself.
pub const LAB_PLUGIN: &str = "lab-veth";
/// The node's configuration list, as the lab writes it.
pub const CONFLIST_NAME: &str = "10-lab.conflist";
/// How long one plugin may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The list the lab starts each node with: its own plugin alone.
pub fn initial_conflist() -> String {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "lab-pod-network",
        "plugins": [{"type": LAB_PLUGIN}],
    });
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_default();
    text.push('\n');
    text
}

/// One node's CNI directories.
#[derive(Clone, Debug)]
pub struct NodeCni {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
}

/// What the runtime knows of a pod's sandbox.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: PathBuf,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The addresses `lab-veth` gave the pod.
    pub ips: Vec<IpAddr>,
}

/// A plugin's failure, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: String,
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin type={:?} failed (add)", self.plugin)?;
        if let Some(code) = self.code {
            write!(f, ", code {code}")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The configuration file the runtime uses: the first by name with a configuration
/// extension (libcni's `ConfFiles`, sorted, as containerd and CRI-O read them).
pub fn config_file(conf_dir: &Path) -> Result<Option<PathBuf>, LabError> {
    let entries = std::fs::read_dir(conf_dir)
        .map_err(LabError::io(format!("listing {}", conf_dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
        .collect();
    names.sort();
    Ok(names.first().map(|name| conf_dir.join(name)))
}

/// The plugins of a configuration, as a list: `(name, cniVersion, plugins)`.
pub fn parse_config(text: &str) -> Result<(String, String, Vec<Value>), String> {
    let config: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let name = config["name"].as_str().unwrap_or_default().to_string();
    let version = config["cniVersion"]
        .as_str()
        .ok_or("no cniVersion")?
        .to_string();
    let plugins = match config.get("plugins") {
        Some(Value::Array(plugins)) => plugins.clone(),
        Some(_) => return Err("`plugins` is not a list".into()),
        // A single plugin's configuration.
        None if config.get("type").is_some() => vec![config.clone()],
        None => return Err("neither `plugins` nor `type`".into()),
    };
    if plugins.iter().any(|p| p["type"].as_str().is_none()) {
        return Err("a plugin without `type`".into());
    }
    Ok((name, version, plugins))
}

/// What the runtime gives a plugin on stdin: its entry, the list's name and version, and
/// the previous result.
pub fn plugin_config(name: &str, version: &str, plugin: &Value, previous: Option<&Value>) -> Value {
    let mut config = plugin.clone();
    config["name"] = Value::from(name);
    config["cniVersion"] = Value::from(version);
    if let Some(previous) = previous {
        config["prevResult"] = previous.clone();
    }
    config
}

/// `CNI_ARGS` as the kubelet's runtime sets it.
pub fn cni_args(sandbox: &Sandbox) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        sandbox.namespace, sandbox.name, sandbox.container_id, sandbox.uid
    )
}

/// What `lab-veth` did, as a CNI result: `eth0` in the sandbox with the pod's addresses,
/// routed through the node's gateway address.
pub fn lab_veth_result(version: &str, sandbox: &Sandbox) -> Value {
    let ips: Vec<Value> = sandbox
        .ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(_) => json!({"address": format!("{ip}/32"), "gateway": POD_GATEWAY.to_string(), "interface": 0}),
            IpAddr::V6(_) => json!({"address": format!("{ip}/128"), "gateway": POD_GATEWAY6.to_string(), "interface": 0}),
        })
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "sandbox": sandbox.netns.display().to_string()}],
        "ips": ips,
        "routes": [{"dst": "0.0.0.0/0", "gw": POD_GATEWAY.to_string()}],
        "dns": {},
    })
}

/// Runs ADD of the node's configuration for `sandbox`; returns the final result. On a
/// failure every plugin is sent DEL (reverse order) before the failure is returned.
pub fn add(node: &NodeCni, sandbox: &Sandbox) -> Result<Result<Value, PluginFailure>, LabError> {
    let (name, version, plugins) = read_list(node)?;
    let mut previous: Option<Value> = None;
    for plugin in &plugins {
        let kind = plugin["type"].as_str().unwrap_or_default();
        let result = if kind == LAB_PLUGIN {
            Ok(lab_veth_result(&version, sandbox))
        } else {
            let input = plugin_config(&name, &version, plugin, previous.as_ref());
            exec(node, kind, "ADD", sandbox, &input)?
        };
        match result {
            Ok(result) => previous = Some(result),
            Err(failure) => {
                del_list(node, sandbox, &name, &version, &plugins)?;
                return Ok(Err(failure));
            }
        }
    }
    Ok(Ok(
        previous.unwrap_or_else(|| json!({"cniVersion": version}))
    ))
}

/// Runs DEL of the node's configuration for `sandbox` (failures of DEL are the plugins' to
/// log; the runtime goes on).
pub fn del(node: &NodeCni, sandbox: &Sandbox) -> Result<(), LabError> {
    let (name, version, plugins) = read_list(node)?;
    del_list(node, sandbox, &name, &version, &plugins)
}

fn read_list(node: &NodeCni) -> Result<(String, String, Vec<Value>), LabError> {
    let file = config_file(&node.conf_dir)?.ok_or_else(|| {
        LabError::Invalid(format!(
            "no CNI configuration in {}: the node's network is not ready",
            node.conf_dir.display()
        ))
    })?;
    let text = std::fs::read_to_string(&file)
        .map_err(LabError::io(format!("reading {}", file.display())))?;
    parse_config(&text).map_err(|reason| LabError::Invalid(format!("{}: {reason}", file.display())))
}

fn del_list(
    node: &NodeCni,
    sandbox: &Sandbox,
    name: &str,
    version: &str,
    plugins: &[Value],
) -> Result<(), LabError> {
    for plugin in plugins.iter().rev() {
        let kind = plugin["type"].as_str().unwrap_or_default();
        if kind != LAB_PLUGIN {
            let input = plugin_config(name, version, plugin, None);
            if let Err(failure) = exec(node, kind, "DEL", sandbox, &input)? {
                tracing::warn!(pod = %format!("{}/{}", sandbox.namespace, sandbox.name), %failure, "CNI DEL failed");
            }
        }
    }
    Ok(())
}

/// Runs one plugin binary as the specification says.
fn exec(
    node: &NodeCni,
    kind: &str,
    command: &str,
    sandbox: &Sandbox,
    input: &Value,
) -> Result<Result<Value, PluginFailure>, LabError> {
    let binary = node.bin_dir.join(kind);
    let failure = |code: Option<u64>, msg: String, details: String| PluginFailure {
        plugin: kind.to_string(),
        code,
        msg,
        details,
    };
    if !binary.is_file() {
        return Ok(Err(failure(
            None,
            format!(
                "failed to find plugin {kind:?} in path [{}]",
                node.bin_dir.display()
            ),
            String::new(),
        )));
    }
    let mut child = Command::new(&binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &sandbox.container_id)
        .env("CNI_NETNS", &sandbox.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", cni_args(sandbox))
        .env("CNI_PATH", &node.bin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(LabError::io(format!("running {}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.to_string().as_bytes())
            .map_err(LabError::io(format!("writing to {}", binary.display())))?;
    }
    let deadline = Instant::now() + PLUGIN_TIMEOUT;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(LabError::io(format!("waiting for {}", binary.display())))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Err(failure(
                None,
                format!("timed out after {} s", PLUGIN_TIMEOUT.as_secs()),
                String::new(),
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let printed: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    if status.success() {
        if command == "DEL" {
            return Ok(Ok(Value::Null));
        }
        return Ok(printed.ok_or_else(|| {
            failure(
                None,
                format!("printed no result: {:?}", stdout.trim()),
                stderr.trim().to_string(),
            )
        }));
    }
    Ok(Err(match printed {
        Some(error) => failure(
            error["code"].as_u64(),
            error["msg"].as_str().unwrap_or_default().to_string(),
            error["details"].as_str().unwrap_or_default().to_string(),
        ),
        None => failure(
            None,
            format!("exited with {status}"),
            format!("stdout {:?}, stderr {:?}", stdout.trim(), stderr.trim()),
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox {
            container_id: "lab-abc".into(),
            netns: PathBuf::from("/run/netns/wl-x-shop-web"),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
            ips: vec!["10.244.1.10".parse().expect("ip")],
        }
    }

    #[test]
    fn the_runtime_chains_what_the_list_names() {
        let list = r#"{"cniVersion":"1.0.0","name":"lab-pod-network",
            "plugins":[{"type":"lab-veth"},{"type":"weft-cni","socket":"/run/x.sock"}]}"#;
        let (name, version, plugins) = parse_config(list).expect("valid");
        assert_eq!(
            (name.as_str(), version.as_str()),
            ("lab-pod-network", "1.0.0")
        );
        let previous = lab_veth_result(&version, &sandbox());
        assert_eq!(previous["ips"][0]["address"], "10.244.1.10/32");
        assert_eq!(
            previous["interfaces"][0]["sandbox"],
            "/run/netns/wl-x-shop-web"
        );
        let input = plugin_config(&name, &version, &plugins[1], Some(&previous));
        assert_eq!(input["type"], "weft-cni");
        assert_eq!(input["socket"], "/run/x.sock");
        assert_eq!(input["name"], "lab-pod-network");
        assert_eq!(input["prevResult"]["ips"][0]["address"], "10.244.1.10/32");
        let single = parse_config(r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#)
            .expect("a single plugin");
        assert_eq!(single.2.len(), 1);
        assert!(parse_config(r#"{"cniVersion":"1.0.0","plugins":[{}]}"#).is_err());
        assert_eq!(
            cni_args(&sandbox()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=lab-abc;K8S_POD_UID=u-1"
        );
        let initial: Value = serde_json::from_str(&initial_conflist()).expect("JSON");
        assert_eq!(initial["plugins"][0]["type"], LAB_PLUGIN);
    }

    #[test]
    fn the_first_configuration_by_name_is_used() {
        let dir = std::env::temp_dir().join(format!("weft-lab-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for name in [
            "20-b.conflist",
            "10-a.conf",
            ".10-a.conflist.weft-tmp",
            "00-notes.txt",
        ] {
            std::fs::write(dir.join(name), "{}").expect("file");
        }
        let found = config_file(&dir).expect("listed");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, Some(dir.join("10-a.conf")));
    }
}
