# weftctl, built from the repository root:
#   docker build -f deploy/images/weftctl.Dockerfile -t weftctl:dev .
# The CLI, for running in a cluster (e.g. `kubectl run`) or CI; no privileges needed.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weftctl \
    && cp target/release/weftctl /weftctl

# glibc and libgcc, nothing else; the image's nonroot user is 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /weftctl /usr/local/bin/weftctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weftctl"]
