# syntax=docker/dockerfile:1
# Warren's container image. Two stages: the Swift 6 toolchain on Debian 12 builds a release
# binary with the Swift runtime linked in (--static-swift-stdlib), through the same
# scripts/install.sh that installs on a host (.ci/run runs those steps natively); the runtime
# stage is debian:bookworm-slim with librabbitmq4 and CA certificates, and no toolchain.
#
#   docker build -t warren --build-arg WARREN_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" .
#   docker run --rm -v "$PWD/config:/etc/warren:ro" -e WARREN_CONFIG=/etc/warren/warren.example.toml warren check
#   docker run -d --name warren -v /srv/warren:/etc/warren:ro -p 9419:9419 warren
#
# The configuration is read from $WARREN_CONFIG (default /etc/warren/warren.toml): mount a
# directory at /etc/warren (a directory, not a single file, so that an edited file is what
# SIGHUP reloads). State (the sqlite dedup store) goes to /var/lib/warren; mount a volume there
# to keep it. Stop with a grace period above shutdown_timeout: `docker stop -t 60`.
# /run/warren holds the default control socket (`docker exec warren warren ctl status`).

ARG SWIFT_VERSION=6.3.1

FROM swift:${SWIFT_VERSION}-bookworm AS build
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -q -y --no-install-recommends librabbitmq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build context has no .git: the commit `warren version` prints comes from this argument
# (left empty, the binary says only its version).
ARG WARREN_GIT_COMMIT=""
ENV WARREN_GIT_COMMIT=${WARREN_GIT_COMMIT}
# The cache mount keeps package checkouts and object files between builds of this Dockerfile;
# the installed tree in /staging is what leaves the stage.
RUN --mount=type=cache,target=/src/.build \
    DESTDIR=/staging PREFIX=/usr/local scripts/install.sh

FROM debian:bookworm-slim
# librabbitmq4 brings libssl3 (TLS to the broker); the binary needs nothing else beyond libc and
# libstdc++. tini runs as PID 1: it forwards SIGTERM to warren alone (which stops its handlers
# itself, as under systemd's KillMode=mixed) and reaps processes that handlers leave orphaned.
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update -q \
 && apt-get install -q -y --no-install-recommends librabbitmq4 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 warren \
 && useradd --system --uid 10001 --gid warren --home-dir /var/lib/warren --no-create-home \
      --shell /usr/sbin/nologin warren \
 && install -d -o warren -g warren -m 0750 /var/lib/warren \
 && install -d -o warren -g warren -m 0750 /run/warren \
 && install -d -m 0755 /etc/warren /usr/local/lib/warren/plugins
COPY --from=build /staging/usr/local/bin/warren /usr/local/bin/warren
COPY --from=build /staging/usr/local/share/doc/warren/ /usr/local/share/doc/warren/
COPY --from=build /staging/usr/local/include/warren_plugin.h /usr/local/include/warren_plugin.h
COPY scripts/docker-healthcheck /usr/local/bin/warren-healthcheck

# Numeric, so that orchestrators enforcing runAsNonRoot can check it without /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/warren
ENV WARREN_CONFIG=/etc/warren/warren.toml \
    WARREN_HEALTHCHECK_ADDRESS=127.0.0.1:9419
EXPOSE 9419
# /healthz on the metrics listener: needs `[metrics] listen = "0.0.0.0:9419"` (or 127.0.0.1)
# in the configuration; without a metrics section, run with --no-healthcheck. The slim image
# has no curl: the check is a bash /dev/tcp request (scripts/docker-healthcheck).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/warren-healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/warren"]
CMD ["run"]
