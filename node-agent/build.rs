//! Builds the kernel programs in `ebpf/programs` with the pinned nightly toolchain and
//! bpf-linker (through aya-build) so that `weft-agent` embeds them. The toolchain is
//! `WEFT_EBPF_TOOLCHAIN`, which `.cargo/config.toml` sets to a dated nightly; `cargo xtask
//! setup` installs what this needs. Set AYA_BUILD_SKIP=1 to skip it for host-only checks.
use anyhow::Context;

const TOOLCHAIN_VAR: &str = "WEFT_EBPF_TOOLCHAIN";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_root = format!("{manifest_dir}/../ebpf/programs");
    println!("cargo:rerun-if-changed={manifest_dir}/../ebpf/common");
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_VAR}");
    let toolchain = std::env::var(TOOLCHAIN_VAR).with_context(|| {
        format!(
            "{TOOLCHAIN_VAR} is not set: it names the nightly the eBPF programs build with \
             (.cargo/config.toml sets it; run cargo from the workspace)"
        )
    })?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "weft-ebpf",
            root_dir: &ebpf_root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
