# weft-waypoint, built from the repository root:
#   docker build -f deploy/images/weft-waypoint.Dockerfile -t weft-waypoint:dev .
# Runs as an unprivileged user: it listens on unprivileged ports (15008, 15020, 15021).
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weft-waypoint \
    && cp target/release/weft-waypoint /weft-waypoint

# glibc and libgcc, nothing else; the image's nonroot user is 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /weft-waypoint /usr/local/bin/weft-waypoint
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weft-waypoint"]
