//! The lab's kubelet for volumes. A lab pod's processes run on the machine's file system,
//! so a volume is a directory of the lab's (`<pod dir>/volumes/<volume>/`) holding links to
//! what backs it, and a container's arguments and environment that name a path under a
//! mount point are given the same path under that directory instead.
//!
//! The sources the lab provides are those the waypoint controller's Deployment mounts:
//! - the ConfigMap `weft-trust-bundle` (the mesh's root certificate): the root the lab's CA
//!   writes;
//! - a projected service-account token: the lab's CA authenticates callers by node, so a
//!   pod's token is its node's.
//!
//! Other volumes are left as they are: paths under them stay the machine's.
use std::path::{Path, PathBuf};

use weft_controller::waypoint::{TRUST_BUNDLE_CONFIG_MAP, TRUST_BUNDLE_KEY};

use crate::manifest::{Container, Volume};

/// What the lab has to back volumes with.
#[derive(Clone, Debug)]
pub struct Backing {
    /// The mesh's root certificate (PEM).
    pub trust_bundle: PathBuf,
    /// The pod's node's credential towards the CA.
    pub token: PathBuf,
}

/// A volume mounted into a container: the directory standing in for `mount_path`, and the
/// links to make in it (file name → what it points at).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mount_path: String,
    pub dir: PathBuf,
    pub links: Vec<(String, PathBuf)>,
}

/// The mounts of `container` the lab provides, with their directories under `volumes_dir`.
pub fn mounts(
    volumes: &[Volume],
    container: &Container,
    backing: &Backing,
    volumes_dir: &Path,
) -> Vec<Mount> {
    container
        .volume_mounts
        .iter()
        .filter_map(|mount| {
            let volume = volumes.iter().find(|v| v.name == mount.name)?;
            let links = links(volume, backing);
            (!links.is_empty()).then(|| Mount {
                mount_path: mount.mount_path.trim_end_matches('/').to_string(),
                dir: volumes_dir.join(&volume.name),
                links,
            })
        })
        .collect()
}

fn links(volume: &Volume, backing: &Backing) -> Vec<(String, PathBuf)> {
    let mut links = Vec::new();
    if volume
        .config_map
        .as_ref()
        .is_some_and(|c| c.name == TRUST_BUNDLE_CONFIG_MAP)
    {
        links.push((TRUST_BUNDLE_KEY.to_string(), backing.trust_bundle.clone()));
    }
    for source in volume.projected.iter().flat_map(|p| &p.sources) {
        if let Some(token) = &source.service_account_token {
            links.push((token.path.clone(), backing.token.clone()));
        }
    }
    links
}

/// `value` with a leading mount path replaced by its directory.
pub fn substitute(value: &str, mounts: &[Mount]) -> String {
    for mount in mounts {
        if let Some(rest) = value.strip_prefix(&mount.mount_path)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{}{rest}", mount.dir.display());
        }
    }
    value.to_string()
}

/// The program a container without a command runs: weft's images run the binary they are
/// named after (`…/weft-waypoint:0.1.0` → `weft-waypoint`, deploy/images/), which the lab
/// has built. `None` for any other image: the lab runs processes, not images.
pub fn entrypoint(image: &str) -> Option<String> {
    let last = image.rsplit('/').next()?;
    let name = last.split(['@', ':']).next()?;
    name.starts_with("weft-").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{
        ConfigMapVolume, ProjectedSource, ProjectedVolume, TokenProjection, VolumeMount,
    };

    #[test]
    fn the_trust_bundle_and_token_volumes_are_the_labs_files_under_their_mount_paths() {
        let volumes = vec![
            Volume {
                name: "trust-bundle".into(),
                config_map: Some(ConfigMapVolume {
                    name: "weft-trust-bundle".into(),
                }),
                projected: None,
            },
            Volume {
                name: "istio-token".into(),
                config_map: None,
                projected: Some(ProjectedVolume {
                    sources: vec![ProjectedSource {
                        service_account_token: Some(TokenProjection {
                            path: "istio-token".into(),
                        }),
                    }],
                }),
            },
            Volume {
                name: "data".into(),
                ..Volume::default()
            },
        ];
        let container = Container {
            name: "c".into(),
            volume_mounts: [
                ("trust-bundle", "/etc/weft/trust"),
                ("istio-token", "/var/run/secrets/tokens/"),
                ("data", "/data"),
            ]
            .into_iter()
            .map(|(name, path)| VolumeMount {
                name: name.into(),
                mount_path: path.into(),
            })
            .collect(),
            ..Container::default()
        };
        let backing = Backing {
            trust_bundle: "/run/lab/ca/root.pem".into(),
            token: "/run/lab/ca/node-1.token".into(),
        };
        let mounts = mounts(
            &volumes,
            &container,
            &backing,
            Path::new("/run/lab/pod/volumes"),
        );
        assert_eq!(mounts.len(), 2, "nothing backs the data volume");
        assert_eq!(
            mounts[0].links,
            [("root-cert.pem".to_string(), backing.trust_bundle.clone())]
        );
        assert_eq!(
            substitute("/etc/weft/trust/root-cert.pem", &mounts),
            "/run/lab/pod/volumes/trust-bundle/root-cert.pem"
        );
        assert_eq!(
            substitute("/var/run/secrets/tokens/istio-token", &mounts),
            "/run/lab/pod/volumes/istio-token/istio-token"
        );
        assert_eq!(
            substitute("/etc/weft/trusted", &mounts),
            "/etc/weft/trusted"
        );
        assert_eq!(substitute("0.0.0.0:15008", &mounts), "0.0.0.0:15008");
    }

    #[test]
    fn weft_images_run_their_binary() {
        assert_eq!(
            entrypoint("ghcr.io/weft-mesh/weft-waypoint:0.1.0").as_deref(),
            Some("weft-waypoint")
        );
        assert_eq!(
            entrypoint("weft-waypoint:dev").as_deref(),
            Some("weft-waypoint")
        );
        assert_eq!(
            entrypoint("r.io/weft-waypoint@sha256:abc").as_deref(),
            Some("weft-waypoint")
        );
        assert_eq!(entrypoint("nginx:1.27"), None);
    }
}
