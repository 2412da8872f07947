//! Builds the kernel programs in `ebpf/programs` with the nightly toolchain and bpf-linker
//! (through aya-build) so that `weft-agent` embeds them. `cargo xtask setup` installs what
//! this needs; set AYA_BUILD_SKIP=1 to skip it for host-only checks.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_root = format!("{manifest_dir}/../ebpf/programs");
    println!("cargo:rerun-if-changed={manifest_dir}/../ebpf/common");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "weft-ebpf",
            root_dir: &ebpf_root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
