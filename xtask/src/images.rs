//! `cargo xtask images`: the images of `deploy/images/` built with buildah from scratch
//! (`weft_lab::image`): the release binaries, the shared libraries `ldd` names and nothing
//! else, so no base image is pulled and no registry is needed. They land in the local
//! containers storage as `localhost/<image>:<tag>` (`buildah images`, `podman images`).
use anyhow::{Context, bail};
use weft_lab::image::{IMAGES, ImageSpec};

use crate::build::cargo;
use crate::workspace_root;

pub struct Options {
    /// Images to build (default: all of them).
    pub names: Vec<String>,
    pub tag: String,
    /// From the debug binaries `cargo xtask build` made, instead of release builds.
    pub debug: bool,
}

/// The images named, in `IMAGES`' order; every image for none.
pub fn select(names: &[String]) -> anyhow::Result<Vec<&'static ImageSpec>> {
    if let Some(unknown) = names
        .iter()
        .find(|n| !IMAGES.iter().any(|i| i.name == n.as_str()))
    {
        let known: Vec<&str> = IMAGES.iter().map(|i| i.name).collect();
        bail!("no image {unknown:?}: the images are {}", known.join(", "));
    }
    Ok(IMAGES
        .iter()
        .filter(|i| names.is_empty() || names.iter().any(|n| n == i.name))
        .collect())
}

/// `cargo build --release` arguments for the binaries of `images`: only those packages.
pub fn cargo_args(images: &[&ImageSpec]) -> Vec<String> {
    let mut args = vec![
        "build".to_string(),
        "--release".into(),
        "--locked".into(),
        "--quiet".into(),
    ];
    let mut packages: Vec<&str> = images
        .iter()
        .flat_map(|i| i.binaries.iter().copied())
        .collect();
    packages.dedup();
    for package in packages {
        args.push("-p".into());
        args.push(package.into());
    }
    args
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let images = select(&options.names)?;
    if options.debug {
        // Exactly `cargo xtask build`: another package selection would unify features
        // differently and rebuild dependencies.
        crate::build::binaries()?;
    } else {
        let args = cargo_args(&images);
        cargo(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin_dir = target.join(if options.debug { "debug" } else { "release" });
    for image in images {
        let tag = format!("localhost/{}:{}", image.name, options.tag);
        // The staged files are a copy of the binaries: kept only while buildah copies them.
        let staging = target.join("images").join(image.name);
        // A tag moved to a new build would leave the old image behind, unnamed.
        weft_lab::image::remove(&tag).with_context(|| format!("removing the old {tag}"))?;
        weft_lab::image::build(image, &bin_dir, &tag, &staging)
            .with_context(|| format!("building {tag}"))?;
        let _ = std::fs::remove_dir_all(&staging);
        println!("built {tag}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_image_builds_the_agent_and_its_cni_plugin_only() {
        let agent = select(&["weft-agent".to_string()]).expect("known");
        assert_eq!(
            cargo_args(&agent),
            [
                "build",
                "--release",
                "--locked",
                "--quiet",
                "-p",
                "weft-agent",
                "-p",
                "weft-cni"
            ]
        );
    }

    #[test]
    fn no_name_is_every_image_and_an_unknown_one_is_refused() {
        let all: Vec<&str> = select(&[]).expect("all").iter().map(|i| i.name).collect();
        assert_eq!(all, ["weft-agent", "weft-ca", "weft-waypoint", "weftctl"]);
        let error = select(&["weft".to_string()])
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("weft-agent, weft-ca"), "{error}");
    }
}
