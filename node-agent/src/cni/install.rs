//! Keeping weft-cni installed on the node: its binary in the CNI binary directory, and its
//! entry chained in the configuration the runtime uses (the first file of the configuration
//! directory by name; the edits themselves are `weft_cni::conflist`'s).
//!
//! Another CNI's installer may rewrite that file at any time (an upgrade of the primary CNI,
//! a node reboot that re-runs its DaemonSet): pods created meanwhile would start without
//! weft-cni, uncaptured until the periodic reconcile finds them. The agent looks at the
//! directory every [`WATCH_PERIOD`] and puts its entry back; a look that finds everything in
//! place writes nothing, so it does not disturb other installers watching the directory.
//!
//! The entry stays when the agent stops, so that pods cannot start uncaptured while it
//! restarts or is upgraded: weft-cni fails their ADD until an agent answers. Removing weft
//! from the cluster takes `--cni-uninstall` (the agent then removes the entry and the
//! binary when it exits without a successor).
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde_json::Value;
use tracing::{info, warn};
use weft_cni::conflist;
use weft_cni::spec::PLUGIN_TYPE;

/// How often the configuration directory is looked at.
pub const WATCH_PERIOD: Duration = Duration::from_millis(200);

pub struct Installer {
    /// The node's CNI configuration directory, as the agent sees it.
    pub conf_dir: PathBuf,
    /// The node's CNI binary directory, as the agent sees it; `None`: the binary is put
    /// there by other means.
    pub bin_dir: Option<PathBuf>,
    /// The weft-cni binary to install.
    pub plugin: PathBuf,
    /// weft's entry (`conflist::entry`).
    pub entry: Value,
    /// (length, modification time) of the binary this agent installed last.
    installed_binary: Mutex<Option<(u64, SystemTime)>>,
}

/// What one look found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    Unchanged,
    /// The entry was written (first install, or put back) into this file.
    Wrote(PathBuf),
    /// The directory has no configuration yet (the primary CNI is not installed).
    NoConfiguration,
}

impl Installer {
    pub fn new(
        conf_dir: PathBuf,
        bin_dir: Option<PathBuf>,
        plugin: PathBuf,
        socket: &Path,
    ) -> Self {
        Self {
            conf_dir,
            bin_dir,
            plugin,
            entry: conflist::entry(&socket.display().to_string()),
            installed_binary: Mutex::new(None),
        }
    }

    /// The configuration file the runtime uses now.
    fn primary(&self) -> anyhow::Result<Option<PathBuf>> {
        let names: Vec<String> = std::fs::read_dir(&self.conf_dir)
            .with_context(|| format!("listing {}", self.conf_dir.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        Ok(conflist::primary(names.iter().map(String::as_str)).map(|n| self.conf_dir.join(n)))
    }

    /// Installs what is missing; writes nothing when everything is in place.
    pub fn ensure(&self) -> anyhow::Result<Pass> {
        self.install_binary()?;
        let Some(file) = self.primary()? else {
            return Ok(Pass::NoConfiguration);
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let Some(updated) = conflist::install(&text, &self.entry).with_context(|| {
            format!(
                "{} is not a CNI configuration weft can chain into",
                file.display()
            )
        })?
        else {
            return Ok(Pass::Unchanged);
        };
        // A single plugin's `.conf` becomes a list, under the name runtimes read lists by.
        let is_list =
            serde_json::from_str::<Value>(&text).is_ok_and(|v| v.get("plugins").is_some());
        let target = if is_list {
            file.clone()
        } else {
            file.with_extension("conflist")
        };
        write_atomically(&target, updated.as_bytes(), mode_of(&file).unwrap_or(0o644))?;
        if target != file {
            std::fs::remove_file(&file).with_context(|| {
                format!("removing {} (now {})", file.display(), target.display())
            })?;
        }
        Ok(Pass::Wrote(target))
    }

    /// Copies the binary unless the one in place is the one this agent installed.
    fn install_binary(&self) -> anyhow::Result<()> {
        let Some(bin_dir) = &self.bin_dir else {
            return Ok(());
        };
        let target = bin_dir.join(PLUGIN_TYPE);
        let current = std::fs::metadata(&target)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        let mut installed = weft_core::sync::lock(&self.installed_binary);
        if current.is_some() && current == *installed {
            return Ok(());
        }
        let wanted = std::fs::read(&self.plugin)
            .with_context(|| format!("reading the weft-cni binary {}", self.plugin.display()))?;
        if current.is_none() || std::fs::read(&target).ok().as_deref() != Some(wanted.as_slice()) {
            write_atomically(&target, &wanted, 0o755)?;
            info!(binary = %target.display(), "installed weft-cni");
        }
        *installed = std::fs::metadata(&target)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        Ok(())
    }

    /// Takes weft-cni out of the configuration and removes its binary (uninstall).
    pub fn uninstall(&self) -> anyhow::Result<()> {
        if let Some(file) = self.primary()? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            if let Some(updated) = conflist::uninstall(&text)
                .with_context(|| format!("{} is not a CNI configuration", file.display()))?
            {
                write_atomically(&file, updated.as_bytes(), mode_of(&file).unwrap_or(0o644))?;
                info!(file = %file.display(), "removed weft-cni from the node's CNI configuration");
            }
        }
        if let Some(bin_dir) = &self.bin_dir {
            let binary = bin_dir.join(PLUGIN_TYPE);
            match std::fs::remove_file(&binary) {
                Ok(()) => info!(binary = %binary.display(), "removed weft-cni"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", binary.display()));
                }
            }
        }
        Ok(())
    }
}

fn mode_of(file: &Path) -> Option<u32> {
    std::fs::metadata(file)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Writes `contents` to `path` through a temporary file in the same directory (named so
/// that no runtime reads it as a configuration) and a rename: readers see the old file or
/// the new one, never half of one.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let Some(dir) = path.parent() else {
        bail!("{} has no directory", path.display());
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.weft-tmp"));
    std::fs::write(&temporary, contents)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("moving {} to {}", temporary.display(), path.display()))
}

/// Keeps weft-cni installed until the task is aborted, logging what changed.
pub async fn keep(installer: Arc<Installer>) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(WATCH_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_problem: Option<String> = None;
    loop {
        ticker.tick().await;
        let looking = installer.clone();
        let pass = tokio::task::spawn_blocking(move || looking.ensure())
            .await
            .context("the CNI installer's look panicked")?;
        let problem = match pass {
            Ok(Pass::Unchanged) => None,
            Ok(Pass::Wrote(file)) => {
                info!(file = %file.display(), "put weft-cni back into the node's CNI configuration, which was rewritten without it");
                None
            }
            Ok(Pass::NoConfiguration) => Some(format!(
                "{} has no CNI configuration yet; weft-cni is chained once the primary CNI \
                 writes one",
                installer.conf_dir.display()
            )),
            Err(error) => Some(format!("{error:#}")),
        };
        if problem != last_problem
            && let Some(problem) = &problem
        {
            warn!(%problem, "weft-cni is not installed");
        }
        last_problem = problem;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"}]}"#;

    fn installer(dir: &Path) -> Installer {
        let conf = dir.join("net.d");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let plugin = dir.join("weft-cni-build");
        std::fs::write(&plugin, b"#!/bin/true\n").expect("plugin");
        Installer::new(conf, Some(bin), plugin, Path::new("/var/run/weft/cni.sock"))
    }

    #[test]
    fn installs_once_puts_itself_back_and_uninstalls() {
        let dir = tempfile::tempdir().expect("dir");
        let installer = installer(dir.path());
        assert_eq!(installer.ensure().expect("ok"), Pass::NoConfiguration);
        let conf = installer.conf_dir.join("10-bridge.conflist");
        std::fs::write(&conf, BRIDGE).expect("primary");
        std::fs::write(installer.conf_dir.join("99-late.conflist"), BRIDGE).expect("other");
        assert_eq!(installer.ensure().expect("ok"), Pass::Wrote(conf.clone()));
        let binary = installer.bin_dir.clone().expect("bin").join("weft-cni");
        assert_eq!(std::fs::read(&binary).expect("binary"), b"#!/bin/true\n");
        assert_eq!(
            std::fs::metadata(&binary)
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let installed = std::fs::read_to_string(&conf).expect("read");
        assert!(conflist::is_installed(&installed, &installer.entry));
        assert_eq!(installer.ensure().expect("ok"), Pass::Unchanged);
        assert_eq!(
            std::fs::read_to_string(installer.conf_dir.join("99-late.conflist")).expect("read"),
            BRIDGE,
            "only the file the runtime uses is touched"
        );
        // Another installer rewrites the file, the binary is deleted: both come back.
        std::fs::write(&conf, BRIDGE).expect("rewrite");
        std::fs::remove_file(&binary).expect("delete");
        assert_eq!(installer.ensure().expect("ok"), Pass::Wrote(conf.clone()));
        assert!(binary.exists());
        installer.uninstall().expect("uninstalled");
        assert!(!binary.exists());
        let plugins: Value =
            serde_json::from_str(&std::fs::read_to_string(&conf).expect("read")).expect("JSON");
        assert_eq!(plugins["plugins"], serde_json::json!([{"type": "bridge"}]));
        let leftovers: Vec<_> = std::fs::read_dir(&installer.conf_dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_single_plugin_conf_becomes_a_conflist() {
        let dir = tempfile::tempdir().expect("dir");
        let installer = installer(dir.path());
        let conf = installer.conf_dir.join("10-bridge.conf");
        std::fs::write(
            &conf,
            r#"{"cniVersion":"0.4.0","name":"k8s","type":"bridge"}"#,
        )
        .expect("primary");
        let list = installer.conf_dir.join("10-bridge.conflist");
        assert_eq!(installer.ensure().expect("ok"), Pass::Wrote(list.clone()));
        assert!(!conf.exists());
        assert_eq!(installer.ensure().expect("ok"), Pass::Unchanged);
    }
}
