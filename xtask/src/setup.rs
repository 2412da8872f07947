//! Installing what a fresh machine lacks, and nothing when all is there.
//!
//! - the nightly toolchain's rust-src (the eBPF build uses `-Z build-std=core`);
//! - bpf-linker, built from crates.io against the nightly toolchain's own LLVM, since no
//!   prebuilt download is available;
//! - Debian packages the lab and the tests drive (iproute2, nftables);
//! - kubectl and kubernetes-validate for `deploy-check` (`deploy_check::ensure_tools`);
//! - the e2e tests' external authorization server's Python packages (grpcio and Envoy's
//!   generated protos, `xds-protos`) in a virtual environment, `target/xtask/ext-authz`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};

/// The bpf-linker release that builds against LLVM 22 (the nightly's).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
const NIGHTLY: &str = "nightly";
/// Debian packages and a binary each provides, to tell whether it is there.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("bpftool", "bpftool"),
    ("tcpdump", "tcpdump"),
];

pub fn run() -> anyhow::Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_debian_packages()?;
    // kubectl and kubernetes-validate for `deploy-check` (and python3 with venv).
    crate::deploy_check::ensure_tools()?;
    ensure_ext_authz_venv()
}

/// Pinned: the server imports `envoy.service.auth.v3.external_auth_pb2_grpc` from them.
const EXT_AUTHZ_PACKAGES: &[&str] = &["grpcio==1.85.4", "protobuf==7.36.2", "xds-protos==1.85.0"];

/// Where the e2e tests find the Python that runs their ext-authz server.
pub fn ext_authz_venv() -> PathBuf {
    crate::workspace_root().join("target/xtask/ext-authz")
}

fn ensure_ext_authz_venv() -> anyhow::Result<()> {
    let dir = ext_authz_venv();
    let python = dir.join("bin/python");
    if !python.is_file() {
        let dir = dir.to_str().context("non-UTF-8 target path")?;
        step("python3", &["-m", "venv", dir], &[])?;
    }
    let check = "import importlib.metadata as m, sys\n\
                 from envoy.service.auth.v3 import external_auth_pb2_grpc\n\
                 sys.exit(m.version('xds-protos') != '1.85.0' or m.version('grpcio') != '1.85.4')";
    let ready = Command::new(&python)
        .args(["-c", check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Ok(());
    }
    let pip = dir.join("bin/pip");
    let pip = pip.to_str().context("non-UTF-8 target path")?;
    let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
    args.extend_from_slice(EXT_AUTHZ_PACKAGES);
    step(pip, &args, &[])
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn step(program: &str, args: &[&str], envs: &[(&str, &Path)]) -> anyhow::Result<()> {
    eprintln!("xtask setup: {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, *v)))
        // xtask runs under stable cargo; let rustup pick the toolchain each command names.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    output("rustup", &["run", NIGHTLY, "rustc", "--print", "sysroot"]).map(PathBuf::from)
}

fn ensure_nightly() -> anyhow::Result<()> {
    if nightly_sysroot().is_ok() {
        return Ok(());
    }
    step(
        "rustup",
        &["toolchain", "install", NIGHTLY, "--profile", "minimal"],
        &[],
    )
    .context("the eBPF programs build with a nightly toolchain")
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let library = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if library.exists() {
        return Ok(());
    }
    step(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", NIGHTLY],
        &[],
    )
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    // bpf-linker finds the nightly's libLLVM only when run through rustup, as aya-build does.
    if let Ok(version) = output("rustup", &["run", NIGHTLY, "bpf-linker", "--version"])
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || n.starts_with("libLLVM-"))
        })
        .ok_or_else(|| {
            anyhow!(
                "the nightly toolchain at {} ships no libLLVM",
                sysroot.display()
            )
        })?;
    // bpf-linker's build looks for `$LLVM_PREFIX/lib/libLLVM.so`; point it at the nightly's.
    let prefix = crate::workspace_root().join("target/xtask/llvm-prefix");
    let link = prefix.join("lib/libLLVM.so");
    std::fs::create_dir_all(prefix.join("lib")).context("creating the LLVM prefix")?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)
        .with_context(|| format!("linking {} to {}", link.display(), llvm.display()))?;
    step(
        "rustup",
        &[
            "run",
            NIGHTLY,
            "cargo",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ],
        &[("LLVM_PREFIX", &prefix)],
    )
    .context("building bpf-linker against the nightly toolchain's LLVM")?;
    let installed = cargo_home().join("bin/bpf-linker");
    if !installed.exists() {
        bail!(
            "bpf-linker was built but {} is missing",
            installed.display()
        );
    }
    Ok(())
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(binary).is_file())
}

fn ensure_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, binary)| !on_path(binary))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "missing packages {missing:?} and no apt-get here: install them with your package manager"
        );
    }
    step("apt-get", &["update", "-qq"], &[])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    step("apt-get", &args, &[])
}
