//! weft's container images, built with buildah from scratch: the binaries (their debug
//! information stripped), exactly the shared libraries they load (as `ldd` finds them:
//! glibc, libgcc_s, the loader) and, for the images that need them, the CA certificates. No base image, so nothing is pulled
//! from a registry. `cargo xtask images` builds them from the release binaries; the
//! container e2e test (`tests/tests/container.rs`) from the binaries under test.
//! `deploy/images/*.Dockerfile` build the same images on a machine with a registry.
use std::path::{Path, PathBuf};

use crate::LabError;
use crate::cmd::run;

/// One image: what goes in, and how it runs.
#[derive(Clone, Copy, Debug)]
pub struct ImageSpec {
    /// The image's name (`localhost/<name>:<tag>`), also its first binary.
    pub name: &'static str,
    /// Binaries copied to `/usr/local/bin`; the first is the entrypoint.
    pub binaries: &'static [&'static str],
    /// `USER` (uid:gid); the agent runs as root for the pins under /sys/fs/bpf.
    pub user: &'static str,
    /// The system's CA certificates, for binaries that verify public servers (the
    /// waypoint fetches JWKS over HTTPS with the platform's roots).
    pub ca_certificates: bool,
    /// Programs of this machine copied to `/usr/bin` (found on PATH), with the libraries
    /// they load: the lab's test pods run `sleep infinity`.
    pub host_programs: &'static [&'static str],
}

/// The images of `deploy/images/`, as their Dockerfiles describe them.
pub const IMAGES: &[ImageSpec] = &[
    ImageSpec {
        name: "weft-agent",
        // The CNI plugin the agent installs on its node: it looks for it beside itself.
        binaries: &["weft-agent", "weft-cni"],
        user: "0:0",
        ca_certificates: false,
        host_programs: &[],
    },
    ImageSpec {
        name: "weft-ca",
        binaries: &["weft-ca"],
        user: "65532:65532",
        ca_certificates: false,
        host_programs: &[],
    },
    ImageSpec {
        name: "weft-waypoint",
        binaries: &["weft-waypoint"],
        user: "65532:65532",
        ca_certificates: true,
        host_programs: &[],
    },
    ImageSpec {
        name: "weftctl",
        binaries: &["weftctl"],
        user: "65532:65532",
        ca_certificates: false,
        host_programs: &[],
    },
];

/// The lab's application pods' image (`Runtime::app_image`): weft-testapp, which the
/// test manifests' pods run, and `sleep`. Not one of weft's images: tests build it.
pub const TESTAPP: ImageSpec = ImageSpec {
    name: "weft-testapp",
    binaries: &["weft-testapp"],
    user: "0:0",
    ca_certificates: false,
    host_programs: &["sleep"],
};

/// Where `program` is on PATH.
fn on_path(program: &str) -> Result<PathBuf, LabError> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or_else(|| LabError::Invalid(format!("{program} is not on PATH")))
}

/// The image named `name`.
pub fn spec(name: &str) -> Option<&'static ImageSpec> {
    IMAGES.iter().find(|i| i.name == name)
}

const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The files `ldd` says a binary loads, the loader included (`linux-vdso` is the kernel's
/// and has no file). Paths as the loader looks them up, which is where the image needs them.
pub fn shared_libraries(ldd_output: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = ldd_output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
            // `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// What `ldd` reports for `binary`, refusing one that needs a library `ldd` cannot find.
fn libraries_of(binary: &Path) -> Result<Vec<PathBuf>, LabError> {
    let text = binary
        .to_str()
        .ok_or_else(|| LabError::Invalid(format!("{} is not a UTF-8 path", binary.display())))?;
    let output = run("ldd", &[text])?;
    if let Some(missing) = output.lines().find(|l| l.contains("not found")) {
        return Err(LabError::Invalid(format!(
            "{}: a library is missing: {}",
            binary.display(),
            missing.trim()
        )));
    }
    Ok(shared_libraries(&output))
}

/// Copies `from` (following symlinks) to `root` + `to`.
fn stage(root: &Path, from: &Path, to: &Path) -> Result<(), LabError> {
    let target = root.join(to.strip_prefix("/").unwrap_or(to));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(LabError::io(format!("creating {}", parent.display())))?;
    }
    std::fs::copy(from, &target).map_err(LabError::io(format!(
        "copying {} to {}",
        from.display(),
        target.display()
    )))?;
    Ok(())
}

/// Builds `spec` from the binaries in `bin_dir` as image `tag` (`localhost/weft-agent:dev`)
/// in the local containers storage, staging its files under `staging` (emptied first).
pub fn build(spec: &ImageSpec, bin_dir: &Path, tag: &str, staging: &Path) -> Result<(), LabError> {
    match std::fs::remove_dir_all(staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(LabError::Io {
                what: format!("emptying {}", staging.display()),
                source: e,
            });
        }
    }
    let mut libraries = Vec::new();
    for binary in spec.binaries {
        let path = bin_dir.join(binary);
        if !path.is_file() {
            return Err(LabError::Invalid(format!(
                "{} is missing: build it first",
                path.display()
            )));
        }
        let target = Path::new("/usr/local/bin").join(binary);
        stage(staging, &path, &target)?;
        // Without the debug information (the release profile keeps line tables for
        // profiling): a third of the size. Symbols stay, for backtraces.
        let staged = staging.join(target.strip_prefix("/").unwrap_or(&target));
        let staged = staged.to_str().ok_or_else(|| {
            LabError::Invalid(format!("{} is not a UTF-8 path", staged.display()))
        })?;
        run("strip", &["--strip-debug", staged])?;
        libraries.extend(libraries_of(&path)?);
    }
    for program in spec.host_programs {
        let path = on_path(program)?;
        stage(staging, &path, &Path::new("/usr/bin").join(program))?;
        libraries.extend(libraries_of(&path)?);
    }
    libraries.sort();
    libraries.dedup();
    for library in &libraries {
        stage(staging, library, library)?;
    }
    if spec.ca_certificates {
        stage(
            staging,
            Path::new(CA_CERTIFICATES),
            Path::new(CA_CERTIFICATES),
        )?;
    }
    let staging_text = staging
        .to_str()
        .ok_or_else(|| LabError::Invalid(format!("{} is not a UTF-8 path", staging.display())))?;
    let container = run("buildah", &["from", "--quiet", "scratch"])?
        .trim()
        .to_string();
    let result = (|| {
        run(
            "buildah",
            &["copy", "--quiet", &container, staging_text, "/"],
        )?;
        let entrypoint = format!("[\"/usr/local/bin/{}\"]", spec.binaries[0]);
        run(
            "buildah",
            &[
                "config",
                "--entrypoint",
                &entrypoint,
                "--cmd",
                "",
                "--user",
                spec.user,
                "--label",
                &format!("org.opencontainers.image.title={}", spec.name),
                &container,
            ],
        )?;
        run("buildah", &["commit", "--quiet", "--rm", &container, tag]).map(drop)
    })();
    if result.is_err() {
        let _ = run("buildah", &["rm", &container]);
    }
    result
}

/// Removes image `tag` from the local containers storage (nothing if it is not there).
pub fn remove(tag: &str) -> Result<(), LabError> {
    if run("buildah", &["images", "--quiet", tag]).is_err() {
        return Ok(());
    }
    run("buildah", &["rmi", tag]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_and_each_library_ldd_names_but_not_the_vdso() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd5d5f0000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1c000000)\n\
                   \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c1bf00000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1bd00000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1d000000)\n";
        assert_eq!(
            shared_libraries(ldd),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_static_binary_needs_nothing() {
        assert!(shared_libraries("\tstatically linked\n").is_empty());
        assert!(shared_libraries("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn every_dockerfile_has_its_image_and_the_agent_carries_the_cni_plugin() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/images");
        for image in IMAGES {
            let file = dir.join(format!("{}.Dockerfile", image.name));
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for binary in image.binaries {
                assert!(
                    text.contains(&format!("/usr/local/bin/{binary}")),
                    "{} does not install {binary}",
                    file.display()
                );
            }
        }
        assert_eq!(spec("weft-agent").map(|s| s.binaries.len()), Some(2));
    }
}
