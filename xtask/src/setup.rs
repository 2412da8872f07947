//! Installing what a command needs, and nothing when it is all there.
//!
//! Each xtask command installs only the parts it uses ([`Plan::for_command`]), so a first
//! `cargo xtask demo` does not wait for the schema validator only `deploy-check` runs;
//! `cargo xtask setup` alone installs everything (`--for COMMAND` what one command needs):
//! - the eBPF toolchain: the nightly pinned by date in `.cargo/config.toml`
//!   (`WEFT_EBPF_TOOLCHAIN`) with rust-src (the build uses `-Z build-std=core`), and
//!   bpf-linker built from crates.io against that nightly's own LLVM (no prebuilt download
//!   is available);
//! - the Debian packages the lab, the demo, the benchmarks and the tests drive (buildah
//!   for `images`; podman and runc, which run the agent's image, for `test`);
//! - kubectl and kubernetes-validate for `deploy-check` (`deploy_check::ensure_tools`);
//! - rustfmt, clippy and cargo-deny for `test`;
//! - cargo-fuzz (pinned, built from crates.io) and the pinned nightly it builds the fuzz
//!   targets with, for `fuzz` and `test`;
//! - PyJWT and cryptography in `target/xtask/jwt-tools`, with which the JWT e2e test
//!   (`tests/tests/jwt.rs`) makes its keys and tokens (`tests/jwt/mint.py`), for `test`;
//! - Prometheus (Debian's `prometheus`), which scrapes the lab in `tests/tests/prometheus.rs`,
//!   for `test`;
//! - grpcio and Envoy's generated protos (`xds-protos`) in `target/xtask/ext-authz`, which
//!   the ext-authz e2e test's server runs with (`tests/manifests/ext_authz/`), with
//!   `websockets` and `h2` for the WebSocket and gRPC streaming peers, for `test`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};
use clap::ValueEnum;

/// The bpf-linker release that builds against LLVM 22 (the pinned nightly's).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// Set by `.cargo/config.toml` for xtask and for node-agent's build script alike.
const EBPF_TOOLCHAIN_VAR: &str = "WEFT_EBPF_TOOLCHAIN";
/// The newest cargo-deny that builds with rustc 1.95 (it needs 1.88).
const CARGO_DENY_VERSION: &str = "0.20.2";
/// cargo-fuzz, which builds and runs the targets of fuzz/ (`cargo xtask fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The commands that need something installed, as `cargo xtask setup --for` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum For {
    /// `build`: the eBPF toolchain.
    Build,
    /// `lab up`: the eBPF toolchain, iproute2 and nftables.
    Lab,
    /// `demo`: as `lab`, and tcpdump (the wire between the nodes).
    Demo,
    /// `bench`: as `lab` (nftables is also the capture baseline).
    Bench,
    /// `deploy-check`: kubectl and kubernetes-validate in a virtual environment.
    DeployCheck,
    /// `images`: the eBPF toolchain (the agent's image) and buildah.
    Images,
    /// `fuzz`: the pinned nightly and cargo-fuzz.
    Fuzz,
    /// `test`: everything.
    Test,
}

/// A Debian package, the binary that tells it is there, and the commands that run it
/// (besides `test`, which runs everything).
struct DebianPackage {
    name: &'static str,
    binary: &'static str,
    used_by: &'static [For],
}

const DEBIAN_PACKAGES: &[DebianPackage] = &[
    // The lab's namespaces, veths, bridges and routes.
    DebianPackage {
        name: "iproute2",
        binary: "ip",
        used_by: &[For::Lab, For::Demo, For::Bench],
    },
    // The lab's kube-proxy; the bench's in-pod REDIRECT baseline.
    DebianPackage {
        name: "nftables",
        binary: "nft",
        used_by: &[For::Lab, For::Demo, For::Bench],
    },
    // The demo's and the tunnel test's capture of the fabric between nodes.
    DebianPackage {
        name: "tcpdump",
        binary: "tcpdump",
        used_by: &[For::Demo],
    },
    // The tests read the kernel's view of attached programs with it.
    DebianPackage {
        name: "bpftool",
        binary: "bpftool",
        used_by: &[],
    },
    // The client on the lab's outside host, as the tutorials use it (the demo, the
    // ingress tests, `lab exec outside -- curl`).
    DebianPackage {
        name: "curl",
        binary: "curl",
        used_by: &[For::Lab, For::Demo, For::Bench],
    },
    // Certificates as Istio's tasks make them, `s_client` and `s_server` (the demo's
    // HTTPS step, the ingress tests' TLS clients and backend).
    DebianPackage {
        name: "openssl",
        binary: "openssl",
        used_by: &[For::Demo],
    },
    // The ingress benchmark's baseline (nginx with the same routes to the same backend),
    // and the lab's external hosts' HTTP and HTTPS servers.
    DebianPackage {
        name: "nginx",
        binary: "nginx",
        used_by: &[For::Lab, For::Demo, For::Bench],
    },
    // The DNS server of the lab's internet, which the agents' DNS proxy forwards to.
    DebianPackage {
        name: "dnsmasq",
        binary: "dnsmasq",
        used_by: &[For::Lab, For::Demo, For::Bench],
    },
    // dig: the egress tests' DNS client.
    DebianPackage {
        name: "bind9-dnsutils",
        binary: "dig",
        used_by: &[],
    },
    // `cargo xtask images` builds the images from scratch with it, no daemon needed.
    DebianPackage {
        name: "buildah",
        binary: "buildah",
        used_by: &[For::Images],
    },
    // The container e2e test runs the agent's image as the DaemonSet would, under podman
    // with runc (crun refuses a hybrid cgroup hierarchy).
    DebianPackage {
        name: "podman",
        binary: "podman",
        used_by: &[],
    },
    DebianPackage {
        name: "runc",
        binary: "runc",
        used_by: &[],
    },
    // The metrics e2e test's scraper: a real Prometheus scraping the agents and waypoints
    // and answering the PromQL of Istio's dashboards.
    DebianPackage {
        name: "prometheus",
        binary: "prometheus",
        used_by: &[],
    },
];

/// What one command needs installed: a pure decision, so that what each command installs
/// is testable without installing anything.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub ebpf_toolchain: bool,
    pub debian_packages: Vec<&'static str>,
    pub deploy_tools: bool,
    pub lint_tools: bool,
    pub cargo_deny: bool,
    /// The Python packages the e2e tests' peers and clients run with.
    pub test_tools: bool,
    /// The pinned nightly (without bpf-linker) and cargo-fuzz.
    pub fuzz_tools: bool,
}

impl Plan {
    /// What `command` needs; `None` (a bare `cargo xtask setup`) is everything.
    pub fn for_command(command: Option<For>) -> Plan {
        // `test` runs every other command's code (the demo, deploy-check, the lab), so it
        // needs what each of them needs.
        let wants =
            |used_by: &[For]| command.is_none_or(|c| c == For::Test || used_by.contains(&c));
        Plan {
            ebpf_toolchain: wants(&[For::Build, For::Lab, For::Demo, For::Bench, For::Images]),
            debian_packages: DEBIAN_PACKAGES
                .iter()
                .filter(|p| wants(p.used_by))
                .map(|p| p.name)
                .collect(),
            deploy_tools: wants(&[For::DeployCheck]),
            lint_tools: wants(&[]),
            cargo_deny: wants(&[]),
            test_tools: wants(&[]),
            fuzz_tools: wants(&[For::Fuzz]),
        }
    }
}

/// Installs what `command` needs (everything for `None`) that is missing.
pub fn run(command: Option<For>) -> anyhow::Result<()> {
    let plan = Plan::for_command(command);
    if plan.ebpf_toolchain {
        let toolchain = ebpf_toolchain()?;
        ensure_nightly(&toolchain)?;
        ensure_bpf_linker(&toolchain)?;
    }
    ensure_debian_packages(&plan.debian_packages)?;
    if plan.deploy_tools {
        crate::deploy_check::ensure_tools()?;
    }
    if plan.lint_tools {
        ensure_lint_tools()?;
    }
    if plan.cargo_deny {
        ensure_cargo_deny()?;
    }
    if plan.test_tools {
        ensure_jwt_tools()?;
        ensure_ext_authz_tools()?;
    }
    if plan.fuzz_tools {
        ensure_nightly(&ebpf_toolchain()?)?;
        ensure_cargo_fuzz()?;
    }
    Ok(())
}

/// The dated nightly the eBPF programs build with.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    std::env::var(EBPF_TOOLCHAIN_VAR).with_context(|| {
        format!(
            "{EBPF_TOOLCHAIN_VAR} is not set: .cargo/config.toml sets it for `cargo xtask`; \
             run it from the workspace"
        )
    })
}

/// PyJWT and the cryptography package it signs with, pinned, in a virtual environment
/// of their own.
const JWT_TOOLS: &[&str] = &["PyJWT==2.10.1", "cryptography==44.0.2"];

/// The virtual environment the JWT e2e test runs `tests/jwt/mint.py` with.
fn jwt_tools_python() -> PathBuf {
    crate::workspace_root().join("target/xtask/jwt-tools/bin/python")
}

fn ensure_jwt_tools() -> anyhow::Result<()> {
    let python = jwt_tools_python();
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(not (m.version('PyJWT') == '{}' and m.version('cryptography') == '{}'))",
        JWT_TOOLS[0].split("==").nth(1).unwrap_or_default(),
        JWT_TOOLS[1].split("==").nth(1).unwrap_or_default(),
    );
    if python.is_file()
        && Command::new(&python)
            .args(["-c", &check])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    let dir = crate::workspace_root().join("target/xtask/jwt-tools");
    if !python.is_file() {
        step(
            "python3",
            &["-m", "venv", dir.to_str().context("non-UTF-8 target path")?],
            &[],
        )?;
    }
    let pip = dir.join("bin/pip");
    let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
    args.extend_from_slice(JWT_TOOLS);
    step(pip.to_str().context("non-UTF-8 target path")?, &args, &[])
}

/// The Python peers' packages, pinned: the external authorization server imports
/// `envoy.service.auth.v3.external_auth_pb2_grpc` from them, the WebSocket echo server and
/// client (`tests/manifests/websocket/websocket_echo.py`) `websockets`, the gRPC streaming
/// peers (`tests/manifests/grpc_streaming/grpc_stream.py`) `grpcio`, the HTTP/2 WebSocket
/// client (`tests/manifests/websocket/h2_websocket.py`) `h2`, the OTLP logs collector
/// (`tests/manifests/otel_access_log/otlp_logs_receiver.py`) and the span receivers
/// (`tests/manifests/tracing/collector.py`) `opentelemetry-proto`, the latter also
/// `jsonschema` and `PyYAML`.
const EXT_AUTHZ_TOOLS: &[&str] = &[
    "grpcio==1.85.4",
    "protobuf==7.36.2",
    "xds-protos==1.85.0",
    "websockets==17.4",
    "h2==4.4.1",
    "opentelemetry-proto==1.45.2",
    "jsonschema==4.26.0",
    "PyYAML==6.0.3",
];

fn ensure_ext_authz_tools() -> anyhow::Result<()> {
    let dir = crate::workspace_root().join("target/xtask/ext-authz");
    let python = dir.join("bin/python");
    let check = "import importlib.metadata as m, sys\n\
                 from envoy.service.auth.v3 import external_auth_pb2_grpc\n\
                 import websockets.sync.client, h2.connection\n\
                 from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc\n\
                 import jsonschema, yaml\n\
                 from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc\n\
                 from opentelemetry.proto.logs.v1 import logs_pb2\n\
                 from opentelemetry.proto.trace.v1 import trace_pb2\n\
                 sys.exit(m.version('xds-protos') != '1.85.0' or m.version('grpcio') != '1.85.4' \
                 or m.version('websockets') != '17.4' or m.version('h2') != '4.4.1' \
                 or m.version('opentelemetry-proto') != '1.45.2' or m.version('jsonschema') != '4.26.0' \
                 or m.version('PyYAML') != '6.0.3' \
                 or 'scope_logs' not in logs_pb2.ResourceLogs.DESCRIPTOR.fields_by_name \
                 or 'scope_spans' not in trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_name)";
    if python.is_file()
        && Command::new(&python)
            .args(["-c", check])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    if !python.is_file() {
        step(
            "python3",
            &["-m", "venv", dir.to_str().context("non-UTF-8 target path")?],
            &[],
        )?;
    }
    let pip = dir.join("bin/pip");
    let pip = pip.to_str().context("non-UTF-8 target path")?;
    let mut args = vec!["install", "--quiet", "--disable-pip-version-check"];
    args.extend_from_slice(EXT_AUTHZ_TOOLS);
    step(pip, &args, &[])?;
    // xds-protos ships an old copy of the OpenTelemetry protos in the same `opentelemetry`
    // package directory (`instrumentation_library_logs`, no `scope_logs`); whichever pip
    // unpacks last wins. opentelemetry-proto's own files are put back on top.
    let otel = EXT_AUTHZ_TOOLS
        .iter()
        .find(|p| p.starts_with("opentelemetry-proto=="))
        .context("opentelemetry-proto is pinned")?;
    step(
        pip,
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
            otel,
        ],
        &[],
    )
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

/// Whether rustup lists `toolchain` (`nightly-2026-05-20` is listed with its host triple).
/// Asked of the list rather than by running it: `rustup run` installs a missing toolchain
/// by itself unless RUSTUP_AUTO_INSTALL=0, without rust-src.
fn toolchain_installed(toolchain: &str) -> anyhow::Result<bool> {
    let list = output("rustup", &["toolchain", "list"])?;
    Ok(list.lines().any(|line| {
        line.split_whitespace()
            .next()
            .is_some_and(|name| name == toolchain || name.starts_with(&format!("{toolchain}-")))
    }))
}

fn sysroot(toolchain: &str) -> anyhow::Result<PathBuf> {
    output("rustup", &["run", toolchain, "rustc", "--print", "sysroot"]).map(PathBuf::from)
}

fn ensure_nightly(toolchain: &str) -> anyhow::Result<()> {
    if !toolchain_installed(toolchain)? {
        step(
            "rustup",
            &[
                "toolchain",
                "install",
                toolchain,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ],
            &[],
        )
        .with_context(|| {
            format!(
                "the eBPF programs build with exactly {toolchain} (.cargo/config.toml), and \
                 rustup could not install it"
            )
        })?;
    }
    let library = sysroot(toolchain)?.join("lib/rustlib/src/rust/library/core");
    if !library.exists() {
        step(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", toolchain],
            &[],
        )?;
    }
    Ok(())
}

pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// bpf-linker links dynamically with the libLLVM of the toolchain it was built against,
/// whose file name carries the rustc release (`libLLVM.so.22.1-rust-1.97.0-nightly`): one
/// built for another nightly fails to start under this one, and is built again.
fn ensure_bpf_linker(toolchain: &str) -> anyhow::Result<()> {
    // bpf-linker finds the nightly's libLLVM only when run through rustup, as aya-build does.
    if let Ok(version) = output("rustup", &["run", toolchain, "bpf-linker", "--version"])
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let sysroot = sysroot(toolchain)?;
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
        .ok_or_else(|| anyhow!("the toolchain at {} ships no libLLVM", sysroot.display()))?;
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
            toolchain,
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
    .with_context(|| format!("building bpf-linker against {toolchain}'s LLVM"))?;
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

fn ensure_debian_packages(wanted: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|p| wanted.contains(&p.name) && !on_path(p.binary))
        .map(|p| p.name)
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

/// The cargo that runs xtask (the workspace's stable toolchain).
fn cargo_succeeds(args: &[&str]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// rustfmt and clippy for `test`'s lint step, in the toolchain that runs it (a minimal
/// rustup profile has neither).
fn ensure_lint_tools() -> anyhow::Result<()> {
    if cargo_succeeds(&["fmt", "--version"]) && cargo_succeeds(&["clippy", "--version"]) {
        return Ok(());
    }
    eprintln!("xtask setup: rustup component add rustfmt clippy");
    // RUSTUP_TOOLCHAIN, as rustup set it for this cargo, names the toolchain to add them to.
    let status = Command::new("rustup")
        .args(["component", "add", "rustfmt", "clippy"])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup component add rustfmt clippy` failed ({status})");
    }
    Ok(())
}

/// cargo-deny for `test`'s supply-chain check (`deny.toml`), built from crates.io.
fn ensure_cargo_deny() -> anyhow::Result<()> {
    if let Ok(version) = output("cargo-deny", &["--version"])
        && version.split_whitespace().nth(1) == Some(CARGO_DENY_VERSION)
    {
        return Ok(());
    }
    step(
        "cargo",
        &[
            "install",
            "cargo-deny",
            "--version",
            CARGO_DENY_VERSION,
            "--locked",
            "--force",
        ],
        &[],
    )
    .context("installing cargo-deny (`cargo xtask test` runs it)")
}

/// cargo-fuzz for `fuzz` (and `test`'s fuzz step), built from crates.io with the stable
/// toolchain; it runs the nightly the fuzz targets are built with itself.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if let Ok(version) = output("cargo-fuzz", &["--version"])
        && version.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION)
    {
        return Ok(());
    }
    step(
        "cargo",
        &[
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
            "--force",
        ],
        &[],
    )
    .context("installing cargo-fuzz (`cargo xtask fuzz` and `cargo xtask test` run it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_setup_installs_everything_and_test_needs_all_of_it() {
        let all = Plan::for_command(None);
        assert!(all.ebpf_toolchain && all.deploy_tools && all.lint_tools && all.cargo_deny);
        assert!(all.fuzz_tools);
        assert_eq!(
            all.debian_packages,
            [
                "iproute2",
                "nftables",
                "tcpdump",
                "bpftool",
                "curl",
                "openssl",
                "nginx",
                "dnsmasq",
                "bind9-dnsutils",
                "buildah",
                "podman",
                "runc",
                "prometheus"
            ]
        );
        assert_eq!(Plan::for_command(Some(For::Test)), all);
    }

    #[test]
    fn the_demo_installs_neither_the_schema_validator_nor_the_test_tools() {
        let demo = Plan::for_command(Some(For::Demo));
        assert!(demo.ebpf_toolchain);
        assert!(!demo.deploy_tools && !demo.lint_tools && !demo.cargo_deny && !demo.fuzz_tools);
        assert_eq!(
            demo.debian_packages,
            [
                "iproute2", "nftables", "tcpdump", "curl", "openssl", "nginx", "dnsmasq"
            ]
        );
    }

    #[test]
    fn deploy_check_needs_no_ebpf_toolchain_and_no_debian_packages() {
        let check = Plan::for_command(Some(For::DeployCheck));
        assert!(check.deploy_tools);
        assert!(!check.ebpf_toolchain && !check.lint_tools && !check.cargo_deny);
        assert!(check.debian_packages.is_empty());
    }

    #[test]
    fn build_lab_and_bench_get_the_ebpf_toolchain_and_only_the_lab_packages_they_run() {
        let build = Plan::for_command(Some(For::Build));
        assert!(build.ebpf_toolchain && !build.deploy_tools);
        assert!(build.debian_packages.is_empty());
        for (command, packages) in [
            // nginx and dnsmasq: the lab's external hosts and their DNS server.
            (
                For::Lab,
                &["iproute2", "nftables", "curl", "nginx", "dnsmasq"][..],
            ),
            (
                For::Bench,
                &["iproute2", "nftables", "curl", "nginx", "dnsmasq"][..],
            ),
        ] {
            let plan = Plan::for_command(Some(command));
            assert!(plan.ebpf_toolchain && !plan.deploy_tools && !plan.cargo_deny);
            assert_eq!(plan.debian_packages, packages);
        }
    }

    #[test]
    fn images_get_the_ebpf_toolchain_and_buildah_but_no_container_runtime() {
        let images = Plan::for_command(Some(For::Images));
        assert!(images.ebpf_toolchain);
        assert!(!images.deploy_tools && !images.lint_tools && !images.test_tools);
        assert_eq!(images.debian_packages, ["buildah"]);
    }

    #[test]
    fn fuzz_gets_the_nightly_and_cargo_fuzz_but_no_bpf_linker_or_packages() {
        let fuzz = Plan::for_command(Some(For::Fuzz));
        assert!(fuzz.fuzz_tools);
        assert!(!fuzz.ebpf_toolchain && !fuzz.lint_tools && !fuzz.test_tools);
        assert!(fuzz.debian_packages.is_empty());
    }
}
