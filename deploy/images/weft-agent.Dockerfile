# weft-agent (and weft-cni, which it installs on its node), built from the repository root:
#   docker build -f deploy/images/weft-agent.Dockerfile -t weft-agent:dev .
# Runs as root with the capabilities the DaemonSet grants (deploy/base/agent.yaml).
FROM docker.io/library/rust:1.95-bookworm AS build
# The embedded eBPF object builds with nightly (build-std needs rust-src) and bpf-linker
# built against the nightly's own LLVM: what `cargo xtask setup` installs
# (xtask/src/setup.rs; keep the versions in step with it).
ARG BPF_LINKER_VERSION=0.13.0
ARG BPF_LINKER_LLVM_FEATURE=llvm-22
RUN rustup toolchain install nightly --profile minimal --component rust-src
RUN sysroot="$(rustup run nightly rustc --print sysroot)" \
    && mkdir -p /opt/llvm/lib \
    && ln -s "$(ls "$sysroot"/lib/libLLVM*.so* | head -n 1)" /opt/llvm/lib/libLLVM.so \
    && LLVM_PREFIX=/opt/llvm rustup run nightly cargo install bpf-linker \
        --version "$BPF_LINKER_VERSION" --locked \
        --no-default-features --features "$BPF_LINKER_LLVM_FEATURE"
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft-agent -p weft-cni \
    && cp target/release/weft-agent /weft-agent \
    && cp target/release/weft-cni /weft-cni

# glibc and libgcc, nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /weft-agent /usr/local/bin/weft-agent
# The CNI plugin the agent installs on its node (it looks for it beside itself).
COPY --from=build /weft-cni /usr/local/bin/weft-cni
ENTRYPOINT ["/usr/local/bin/weft-agent"]
