# segd: UNet3+ organ segmentation HTTP daemon.
#
#   podman build --format docker -t segd .        (docker build -t segd . works too)
#   podman run --rm -p 8080:8080 segd             -> http://localhost:8080/readyz
#
# --format docker keeps HEALTHCHECK (the OCI image format has no such field).
# Two stages: "build" compiles with meson on Debian 12, the runtime stage gets
# only the shared libraries, the stripped binary and the weights (< 250 MB:
# DCMTK and what it needs, ICU through libxml2 above all, are about 75 MB of
# it; without them the PACS routes, DICOM in and SEG/RTSTRUCT out, are off).
ARG DEBIAN_IMAGE=debian:bookworm-slim

############################################################ build stage
FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc g++ libc6-dev meson ninja-build pkg-config \
      libmicrohttpd-dev libjansson-dev libpng-dev libopenblas-dev libdcmtk-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole context (see .dockerignore): meson.build pulls in src/, tools/
# (build-time generators) and tests/*/meson.build, and installs weights/.
COPY . .
# meson install puts the (stripped) binary in /usr/bin and
# weights/*.safetensors in /usr/share/segd; only those two reach the runtime.
RUN meson setup /build --buildtype=release -Dprefix=/usr -Dwerror=false \
 && ninja -C /build \
 && DESTDIR=/out meson install -C /build --no-rebuild --strip \
 && test -x /out/usr/bin/segd \
 && test -s /out/usr/share/segd/unet3p-16.safetensors \
 && grep -q "SEGD_HAVE_DICOM" /build/build.ninja \
 && /out/usr/bin/segd version

############################################################ runtime stage
FROM ${DEBIAN_IMAGE}
# Shared libraries only (what `ldd segd` needs beyond the base image).  No
# curl: the HEALTHCHECK below uses bash's /dev/tcp, bash is already there.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libmicrohttpd12 libjansson4 libpng16-16 libopenblas0-pthread libdcmtk17 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 10001 segd \
 && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin --no-log-init segd
COPY --from=build /out/usr/bin/segd /usr/bin/segd
COPY --from=build /out/usr/share/segd/ /usr/share/segd/

# Every `segd serve` option has a SEGD_* variable (`segd serve --help`);
# override with -e / env:.  SEGD_WORKERS is pinned because the daemon's
# default (one per online CPU) sees the host's CPUs, not the container's
# CPU limit.  Each worker holds a 99 MiB arena (at the default max-pixels):
# resident about 45 MiB + 99 MiB per worker, 243 MiB with 2 (measured).
ENV SEGD_BIND=0.0.0.0 \
    SEGD_PORT=8080 \
    SEGD_WEIGHTS=/usr/share/segd/unet3p-16.safetensors \
    SEGD_WORKERS=2 \
    SEGD_DRAIN_TIMEOUT=30 \
    SEGD_ACCESS_LOG=on \
    OPENBLAS_NUM_THREADS=1

USER 10001:10001
EXPOSE 8080
# SIGTERM: /readyz turns 503, accepted jobs are answered (up to
# SEGD_DRAIN_TIMEOUT), then exit 0.  Give the runtime a longer stop timeout
# than that: docker stop -t 40, compose stop_grace_period: 40s.
STOPSIGNAL SIGTERM
# Liveness probe without curl: bash opens /dev/tcp to the daemon and expects
# an HTTP 200 status line from GET /healthz (200 while draining, too; a
# balancer's readiness check uses /readyz).  deploy/compose.yaml repeats it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SEGD_PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 2 status <&3 && [[ $status == HTTP/1.?\\ 200* ]]"]

LABEL org.opencontainers.image.title="segd" \
      org.opencontainers.image.description="UNet3+ organ segmentation HTTP daemon (POST /v1/segment)" \
      org.opencontainers.image.licenses="MIT"
ENTRYPOINT ["/usr/bin/segd"]
CMD ["serve"]
