# syntax=docker/dockerfile:1
# Keyfob's container image: built with cargo in the Rust image, run from Debian 12 slim as a user
# of its own. deploy/README.md has the commands (docker or podman build, run, compose).

# The build: the workspace's manifests and crates only (.dockerignore keeps the rest out).
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p keyfob \
    && install -m 0755 target/release/keyfob /usr/local/bin/keyfob

# The image: the binary, CA certificates (for an SMTP relay over TLS) and curl for the health check.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 keyfob \
    && useradd --system --uid 10001 --gid keyfob --home-dir /var/lib/keyfob \
       --shell /usr/sbin/nologin keyfob \
    && install -d -m 0700 -o keyfob -g keyfob /var/lib/keyfob
COPY --from=build /usr/local/bin/keyfob /usr/local/bin/keyfob

# Listen on every interface of the container; give KEYFOB_PUBLIC_URL (the URL clients use) when
# running it. The data directory holds the SQLite database and the master key made on first
# start, unless KEYFOB_DATABASE_URL and KEYFOB_MASTER_KEY_FILE point elsewhere.
ENV KEYFOB_DATA_DIR=/var/lib/keyfob \
    KEYFOB_LISTEN=0.0.0.0:8080 \
    KEYFOB_LOG_JSON=true
USER 10001:10001
WORKDIR /var/lib/keyfob
VOLUME /var/lib/keyfob
EXPOSE 8080
# Ready when the database answers (/readyz); the port is KEYFOB_LISTEN's.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/readyz || exit 1
# `keyfob serve` by default; any other command in its place (`accounts create`, `keys create`,
# `master-key rotate`) runs in the same image: `docker run … keyfob:local keys list --account …`.
ENTRYPOINT ["/usr/local/bin/keyfob"]
CMD ["serve"]
