# vigil-proxy: the sidecar, and `vigil-proxy init` (iptables) for the init container.
# Build from the repository root:
#   docker build -f docker/vigil-proxy.Dockerfile -t ghcr.io/vigil-mesh/vigil-proxy:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# The release profile is LTO'd and stripped (Cargo.toml); ~10 MB PSS when idle.
RUN cargo build --release --locked -p vigil-proxy --bin vigil-proxy \
 && cp target/release/vigil-proxy /vigil-proxy

# iptables is needed by the init container (it runs as root with NET_ADMIN/NET_RAW only);
# the sidecar itself runs as the unprivileged proxy user 2102.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 2102 --no-create-home --shell /usr/sbin/nologin vigil-proxy
COPY --from=build /vigil-proxy /usr/local/bin/vigil-proxy
USER 2102:2102
EXPOSE 4143 4191
ENTRYPOINT ["/usr/local/bin/vigil-proxy"]
CMD ["run"]
