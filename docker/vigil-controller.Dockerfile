# vigil-controller: the control plane (CA, policy index, proxy API, injector webhook).
# Build from the repository root:
#   docker build -f docker/vigil-controller.Dockerfile -t ghcr.io/vigil-mesh/vigil-controller:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p vigil-controller --bin vigil-controller \
 && cp target/release/vigil-controller /vigil-controller

# distroless/cc: glibc and CA certificates, no shell, runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /vigil-controller /usr/local/bin/vigil-controller
USER 65532:65532
EXPOSE 8443 9191 9443
ENTRYPOINT ["/usr/local/bin/vigil-controller"]
