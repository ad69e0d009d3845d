# syntax=docker/dockerfile:1
# onecount: a multi-stage build. The build stage has what the rdkafka crate's bundled librdkafka
# build needs (build-essential, pkg-config, zlib1g-dev); the runtime is debian slim with the binary.
#   docker build -t onecount .        (docker-compose.yml builds it as onecount:local)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit); the binary is copied out of
# the cached target folder because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin onecount \
    && cp target/release/onecount /usr/local/bin/onecount

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin onecount
COPY --from=build /usr/local/bin/onecount /usr/local/bin/onecount
USER onecount
# /metrics, /healthz, /readyz (docs/METRICS.md); the config must listen on 0.0.0.0 in a container.
EXPOSE 9464
ENTRYPOINT ["onecount"]
CMD ["--help"]
