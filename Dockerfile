# Multi-stage build for the milo-webhook admission server.
#
#   docker build -t ghcr.io/milo-os/milo-webhook:dev .
#
# Stage 1 compiles a release binary with the Rust toolchain; stage 2 copies
# only that binary into a distroless image that runs as a non-root user.

############################
# Builder
############################
FROM rust:1-bookworm AS builder

WORKDIR /build

# --- Dependency cache layer -------------------------------------------------
# Copy only the manifests first and build against stub sources, so the
# (slow) dependency build is cached and only re-runs when Cargo.toml or
# Cargo.lock change.
#
# Cargo refuses to load a manifest whose declared targets have no source
# file, so besides src/main.rs and src/lib.rs we also stub any explicit
# `path = "....rs"` and any [[bench]]/[[test]]/[[example]] declared by name
# only. Those extra stubs stay in place (only src/ is copied in below); the
# final build compiles the binary alone and never builds them.
#
# Afterwards the stub crate's own artifacts are deleted so the real sources are
# always rebuilt, whatever the mtimes of the copied files are.
COPY Cargo.toml Cargo.lock ./
RUN set -eu; \
    stub() { [ -e "$1" ] || { mkdir -p "$(dirname "$1")"; echo 'fn main() {}' > "$1"; }; }; \
    mkdir -p src; \
    echo 'fn main() {}' > src/main.rs; \
    : > src/lib.rs; \
    for p in $(sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' Cargo.toml); do stub "$p"; done; \
    awk 'function flush() { if (kind != "" && name != "" && !haspath) print kind "/" name ".rs"; kind = ""; name = ""; haspath = 0; }; \
         /^[[:space:]]*\[/ { flush(); }; \
         /^[[:space:]]*\[\[bench\]\]/ { kind = "benches"; }; \
         /^[[:space:]]*\[\[test\]\]/ { kind = "tests"; }; \
         /^[[:space:]]*\[\[example\]\]/ { kind = "examples"; }; \
         kind != "" && /^[[:space:]]*name[[:space:]]*=/ { split($0, a, "\""); name = a[2]; }; \
         kind != "" && /^[[:space:]]*path[[:space:]]*=/ { haspath = 1; }; \
         END { flush(); }' Cargo.toml \
      | while read -r p; do stub "$p"; done; \
    cargo build --release --locked --bin milo-webhook; \
    rm -rf src \
           target/release/milo-webhook \
           target/release/deps/milo_webhook-* \
           target/release/deps/libmilo_webhook-* \
           target/release/.fingerprint/milo-webhook-*

# --- Application build ------------------------------------------------------
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin milo-webhook \
 && cp target/release/milo-webhook /milo-webhook \
 && mkdir -p /work/certs

############################
# Runtime
############################
# distroless/cc ships glibc and libgcc (needed by a default Rust binary),
# CA certificates and nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /milo-webhook /milo-webhook

# A working directory the non-root user can write: `serve` without --tls-cert-file generates a
# development certificate into ./certs, so a bare `docker run` of the image needs one (in a
# Deployment the certificate comes from a Secret and the root filesystem can stay read-only).
COPY --from=builder --chown=65532:65532 /work /work
WORKDIR /work

# 65532 is the "nonroot" user of distroless images.
USER 65532:65532

# 9443: HTTPS admission endpoint; 8080: plain-HTTP admin (/readyz, /livez, /metrics).
EXPOSE 9443 8080

ENTRYPOINT ["/milo-webhook"]
CMD ["serve"]
