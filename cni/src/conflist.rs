//! weft's entry in the node's CNI configuration, as pure edits of its text (the agent does
//! the reading, writing and watching).
//!
//! The runtime uses the first file of its configuration directory, by name, with a
//! configuration extension (containerd, CRI-O and the kubelet agree). weft's entry goes at
//! the end of that file's `plugins`, chained after the plugin that gives the pod its
//! interface and addresses. A single-plugin `.conf` becomes a list. Another CNI's installer
//! may rewrite the file at any time; the agent then puts the entry back.
use serde_json::{Map, Value, json};

use crate::spec::PLUGIN_TYPE;

/// The extensions runtimes read configurations from (libcni's `ConfFiles`).
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConflistError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("neither a plugin (`type`) nor a list (`plugins`)")]
    NotAConfig,
    #[error("`plugins` is not a list of objects")]
    BadPlugins,
    #[error("the list has no plugin before weft's to give pods their interface")]
    NoPrimary,
}

/// The file the runtime uses among `names` (file names of the directory).
pub fn primary<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .filter(|name| {
            name.rsplit_once('.')
                .is_some_and(|(_, ext)| EXTENSIONS.contains(&ext))
        })
        .min()
}

/// weft's entry: its type and the agent's socket.
pub fn entry(socket: &str) -> Value {
    json!({"type": PLUGIN_TYPE, "socket": socket})
}

fn is_weft(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// The configuration as a list: a `.conf` (one plugin) becomes `{cniVersion, name,
/// plugins: [it]}`.
fn as_list(text: &str) -> Result<Map<String, Value>, ConflistError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ConflistError::NotJson(e.to_string()))?;
    let Value::Object(mut config) = value else {
        return Err(ConflistError::NotAConfig);
    };
    if config.contains_key("plugins") {
        let plugins = config
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or(ConflistError::BadPlugins)?;
        if !plugins.iter().all(Value::is_object) {
            return Err(ConflistError::BadPlugins);
        }
        return Ok(config);
    }
    if !config.contains_key("type") {
        return Err(ConflistError::NotAConfig);
    }
    let version = config
        .remove("cniVersion")
        .unwrap_or_else(|| Value::from("0.3.1"));
    let name = config
        .remove("name")
        .unwrap_or_else(|| Value::from("k8s-pod-network"));
    Ok(Map::from_iter([
        ("cniVersion".to_string(), version),
        ("name".to_string(), name),
        (
            "plugins".to_string(),
            Value::Array(vec![Value::Object(config)]),
        ),
    ]))
}

/// Whether `text` chains exactly `wanted`, once, after at least one other plugin.
pub fn is_installed(text: &str, wanted: &Value) -> bool {
    let Ok(list) = as_list(text) else {
        return false;
    };
    if !text_is_list(text) {
        return false;
    }
    let plugins = list
        .get("plugins")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ours: Vec<usize> = plugins
        .iter()
        .enumerate()
        .filter(|(_, p)| is_weft(p))
        .map(|(i, _)| i)
        .collect();
    ours.len() == 1 && ours[0] > 0 && plugins[ours[0]] == *wanted
}

fn text_is_list(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| v.get("plugins").is_some())
}

/// `text` with `wanted` chained at the end (any other weft entry removed), or `None` when
/// it is already installed. The result is a list even when `text` was a single plugin.
pub fn install(text: &str, wanted: &Value) -> Result<Option<String>, ConflistError> {
    if is_installed(text, wanted) {
        return Ok(None);
    }
    let mut list = as_list(text)?;
    let mut plugins: Vec<Value> = list
        .get("plugins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    plugins.retain(|p| !is_weft(p));
    if plugins.is_empty() {
        return Err(ConflistError::NoPrimary);
    }
    plugins.push(wanted.clone());
    list.insert("plugins".into(), Value::Array(plugins));
    Ok(Some(pretty(&Value::Object(list))))
}

/// `text` without weft's entry, or `None` when it has none.
pub fn uninstall(text: &str) -> Result<Option<String>, ConflistError> {
    let mut list = as_list(text)?;
    let Some(Value::Array(plugins)) = list.get_mut("plugins") else {
        return Err(ConflistError::BadPlugins);
    };
    let before = plugins.len();
    plugins.retain(|p| !is_weft(p));
    if plugins.len() == before {
        return Ok(None);
    }
    Ok(Some(pretty(&Value::Object(list))))
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO: &str = r#"{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "plugins": [
    {"type": "calico", "ipam": {"type": "calico-ipam"}},
    {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}
  ]
}"#;

    fn wanted() -> Value {
        entry("/var/run/weft/cni.sock")
    }

    fn plugins(text: &str) -> Vec<Value> {
        let value: Value = serde_json::from_str(text).expect("JSON");
        value["plugins"].as_array().expect("a list").clone()
    }

    #[test]
    fn the_runtime_uses_the_first_configuration_by_name() {
        let names = [
            "99-other.conflist",
            "10-calico.conflist",
            "calico-kubeconfig",
            ".10-weft.tmp",
            "05-cilium.conf",
        ];
        assert_eq!(primary(names), Some("05-cilium.conf"));
        assert_eq!(primary(["README", "kubeconfig"]), None);
    }

    #[test]
    fn weft_is_chained_last_once_and_then_left_alone() {
        let installed = install(CALICO, &wanted()).expect("valid").expect("changed");
        let list = plugins(&installed);
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["type"], "calico");
        assert_eq!(list[0]["ipam"]["type"], "calico-ipam");
        assert_eq!(list[2], wanted());
        assert!(is_installed(&installed, &wanted()));
        assert_eq!(install(&installed, &wanted()), Ok(None), "no churn");
        // Another socket: replaced, not added.
        let moved = entry("/run/weft/cni.sock");
        let reinstalled = install(&installed, &moved)
            .expect("valid")
            .expect("changed");
        assert_eq!(plugins(&reinstalled).len(), 3);
        assert_eq!(plugins(&reinstalled)[2], moved);
        // Uninstalling gives the original list back.
        let removed = uninstall(&installed).expect("valid").expect("changed");
        assert_eq!(plugins(&removed), plugins(CALICO));
        assert_eq!(uninstall(CALICO), Ok(None));
    }

    #[test]
    fn a_rewritten_file_without_weft_or_with_weft_first_is_fixed() {
        assert!(!is_installed(CALICO, &wanted()));
        let first = r#"{"cniVersion":"1.0.0","name":"n","plugins":[
            {"type":"weft-cni","socket":"/var/run/weft/cni.sock"},{"type":"bridge"}]}"#;
        assert!(
            !is_installed(first, &wanted()),
            "weft must follow the primary"
        );
        let fixed = install(first, &wanted()).expect("valid").expect("changed");
        let list = plugins(&fixed);
        assert_eq!(list[0]["type"], "bridge");
        assert_eq!(list[1], wanted());
        let only_weft = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"weft-cni"}]}"#;
        assert_eq!(install(only_weft, &wanted()), Err(ConflistError::NoPrimary));
    }

    #[test]
    fn a_single_plugin_configuration_becomes_a_list() {
        let bridge = r#"{"cniVersion":"0.4.0","name":"mynet","type":"bridge","bridge":"cni0"}"#;
        let installed = install(bridge, &wanted()).expect("valid").expect("changed");
        let value: Value = serde_json::from_str(&installed).expect("JSON");
        assert_eq!(value["cniVersion"], "0.4.0");
        assert_eq!(value["name"], "mynet");
        assert_eq!(
            value["plugins"][0],
            json!({"type": "bridge", "bridge": "cni0"})
        );
        assert_eq!(value["plugins"][1], wanted());
        assert!(!is_installed(bridge, &wanted()));
    }

    #[test]
    fn what_is_not_a_configuration_is_refused() {
        assert!(matches!(
            install("{", &wanted()),
            Err(ConflistError::NotJson(_))
        ));
        assert_eq!(install("[]", &wanted()), Err(ConflistError::NotAConfig));
        assert_eq!(
            install(r#"{"plugins": [1]}"#, &wanted()),
            Err(ConflistError::BadPlugins)
        );
    }
}
