# Sluice's container image: `sluice serve` for Cloud Run, a VM or Kubernetes (docs/deploying.md).
# Two stages on Debian 12: the build stage has the compilers, the -dev packages and Debian's dagre.min.js (embedded
# into the web UI at build time); the runtime stage only the shared libraries the binary links (Lua 5.4,
# lua-cjson, libcurl, OpenSSL 3, libmicrohttpd, SQLite, jansson, libpq for the PostgreSQL store) and CA
# certificates for Google's APIs.
# BASE: any Debian 12 image; `make image` builds one locally with mmdebstrap (scripts/image.sh), since no
# registry is reachable on the build machines. Elsewhere the default is Docker Hub's.
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends build-essential cmake pkg-config liblua5.4-dev lua-cjson-dev \
      libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libsqlite3-dev libjansson-dev libcmocka-dev libpq-dev \
      node-dagre-layout >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY lua lua
COPY ui ui
COPY src src
COPY tests tests
COPY bench bench
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null \
 && cmake --build /build --target sluice -j "$(nproc)" \
 && install -D -s -m 0755 /build/sluice /out/usr/local/bin/sluice
COPY workflows /out/etc/sluice/workflows

FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends liblua5.4-0 lua-cjson libcurl4 libssl3 libmicrohttpd12 \
      libsqlite3-0 libjansson4 libpq5 ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system --gid 10001 sluice \
 && useradd --uid 10001 --gid sluice --home-dir /var/lib/sluice --no-create-home --shell /usr/sbin/nologin sluice \
 && install -d -o sluice -g sluice -m 0750 /var/lib/sluice
COPY --from=build /out/ /
# The shipped workflows are baked in; mount a directory (a ConfigMap, a Cloud Run secret or volume, a bind
# mount) over /etc/sluice/workflows to replace them: serve watches the directory and reloads on change.
# The SQLite store lives in /var/lib/sluice: a volume on a VM; on Cloud Run use PostgreSQL (--store "host=...").
ENV PORT=8080 \
    SLUICE_STORE=/var/lib/sluice/sluice.db
WORKDIR /var/lib/sluice
USER 10001:10001
EXPOSE 8080
# serve stops cleanly on SIGTERM (finishes requests in flight, commits what is queued): docs/api.md, Shutdown.
STOPSIGNAL SIGTERM
# `sluice health` GETs http://127.0.0.1:$PORT/readyz (no curl in the image). Platforms without HEALTHCHECK
# (Cloud Run, Kubernetes) probe /readyz themselves.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["sluice", "health"]
ENTRYPOINT ["sluice"]
# --audience (or --no-auth) has no safe default: pass the whole serve command line, e.g.
#   serve --workflows /etc/sluice/workflows --audience https://HOST/v1/events/pubsub --allow-email ...
CMD ["serve", "--workflows", "/etc/sluice/workflows"]
