# weft-ca, built from the repository root:
#   docker build -f deploy/images/weft-ca.Dockerfile -t weft-ca:dev .
# Runs as an unprivileged user: it only serves gRPC on 15012 and reads its root from a Secret.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft-ca \
    && cp target/release/weft-ca /weft-ca

# glibc and libgcc, nothing else; the image's nonroot user is 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /weft-ca /usr/local/bin/weft-ca
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weft-ca"]
