# albwatch's container image: `docker build -t albwatch:0.1.0 .` The runtime image holds the
# binary alone, runs as an unprivileged user and expects its configuration mounted at
# /etc/albwatch/albwatch.toml (deploy/kubernetes mounts a ConfigMap there; set admin.addr to
# 0.0.0.0:9898 so the admin port is reachable from outside the container). A quick look
# without a config: `docker run --rm -p 9898:9898 albwatch:0.1.0 demo --admin-addr 0.0.0.0:9898`.

FROM rust:1.95-bookworm AS builder
WORKDIR /build

# Dependencies first, against stub sources, so this layer is reused until Cargo.toml or
# Cargo.lock change. The stubs' own artefacts are deleted afterwards: the real sources copied
# next keep their (older) modification times, and cargo would otherwise take the stub build as
# up to date. benches/ is stubbed because Cargo.toml names a bench target. TLS is rustls with
# ring, which needs only the C compiler this image already has (no OpenSSL, no cmake).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked --bin albwatch \
    && rm -rf src benches target/release/albwatch target/release/albwatch.d \
        target/release/deps/albwatch-* target/release/deps/libalbwatch-* \
        target/release/.fingerprint/albwatch-*

COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin albwatch

# glibc and libgcc (unwinding) are all the binary needs; the :nonroot variant has no shell and
# runs as uid 65532, which the Kubernetes manifests' runAsUser repeats.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /build/target/release/albwatch /usr/local/bin/albwatch
USER 65532:65532
# admin (/metrics, /ready, /live) and the Firehose endpoint, as in deploy/kubernetes.
EXPOSE 9898 8443
ENTRYPOINT ["albwatch"]
CMD ["run", "--config", "/etc/albwatch/albwatch.toml"]
