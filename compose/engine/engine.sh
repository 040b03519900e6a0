#!/usr/bin/env bash
# A private Docker engine for `make compose-test` (and for trying the compose
# stacks by hand on a machine without one). Subcommands:
#   install  Debian packages (docker.io, debootstrap) + compose v2, built from the
#            Go module proxy into .cache/bin and installed as a CLI plugin
#   start    dockerd with its own data root (.cache/docker), exec root, socket and
#            pid file (.state/docker); no iptables, no docker0 bridge
#   images   stand-ins for the images whose registry is unreachable here
#            (see compose/engine/README.md), tagged with the names the files use
#   observability  the same for observability.yaml's collector and Jaeger
#   stop     stop that dockerd by its pid
#   env      print the variables that point `docker` at it (eval "$(... env)")
# Everything is idempotent; nothing outside the repository is touched except
# the Debian packages (apt-get) and the Go module cache.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=$ROOT/.cache
STATE=$ROOT/.state/docker
COMPOSE_VERSION=${SLUICEGATE_COMPOSE_VERSION:-v2.40.3}
COMPOSE_BIN=$CACHE/bin/docker-compose-$COMPOSE_VERSION
export DOCKER_CONFIG=$CACHE/docker-config
export DOCKER_HOST=unix://$STATE/docker.sock
export DOCKER_BUILDKIT=0   # no buildx here; BuildKit would fetch its frontend from a registry
KAFKA_VERSION=$(sed -n 's/^KAFKA_VERSION=//p' "$ROOT/compose/.env.example")
PID=$STATE/dockerd.pid

say() { printf '[engine] %s\n' "$*" >&2; }
die() { printf '[engine] ERROR: %s\n' "$*" >&2; exit 1; }

cmd_env() {
  echo "export DOCKER_CONFIG=$DOCKER_CONFIG DOCKER_HOST=$DOCKER_HOST DOCKER_BUILDKIT=0"
}

cmd_install() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v mvn >/dev/null || missing+=(maven)
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root: run as root or apt-get install them first"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [[ ! -x $COMPOSE_BIN ]]; then
    command -v go >/dev/null || die "compose $COMPOSE_VERSION is built from source: install Go 1.24+ (https://go.dev/dl) and retry"
    say "building compose $COMPOSE_VERSION from the Go module proxy (about 8 min on 2 cores; cached in $COMPOSE_BIN)"
    local dir src=$CACHE/build/compose-$COMPOSE_VERSION
    # `go install ...@version` is refused (exclude directives in its go.mod): build a writable copy.
    dir=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf "$src" && mkdir -p "$(dirname "$src")" "$CACHE/bin" && cp -r "$dir" "$src" && chmod -R u+w "$src"
    (cd "$src" && nice -n 10 go build -trimpath \
      -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      -o "$COMPOSE_BIN.partial" ./cmd)
    mv "$COMPOSE_BIN.partial" "$COMPOSE_BIN"
    rm -rf "$src"
  fi
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sf "$COMPOSE_BIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  docker compose version >/dev/null || die "the compose plugin at $DOCKER_CONFIG/cli-plugins does not run"
}

running() { [[ -f $PID ]] && kill -0 "$(cat "$PID")" 2>/dev/null; }

cmd_start() {
  command -v dockerd >/dev/null || die "dockerd not found: run '$0 install' (Debian package docker.io)"
  mkdir -p "$STATE" "$CACHE/docker"
  if running && docker info >/dev/null 2>&1; then say "dockerd already running (pid $(cat "$PID"))"; return; fi
  say "starting dockerd (data root $CACHE/docker, socket $STATE/docker.sock)"
  # --bridge=none: no docker0 left behind; compose makes its own bridge networks.
  # --iptables=false: no NAT, so image builds run with --network host.
  setsid dockerd --data-root "$CACHE/docker" --exec-root "$STATE/exec" --pidfile "$PID" \
    -H "$DOCKER_HOST" --iptables=false --ip6tables=false --bridge=none \
    >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && { say "dockerd up (pid $(cat "$PID"))"; return; }
    sleep 1
  done
  tail -n 30 "$STATE/dockerd.log" >&2
  die "dockerd did not answer on $DOCKER_HOST within 120 s (log: $STATE/dockerd.log)"
}

cmd_stop() {
  running || { say "dockerd not running"; return; }
  local pid; pid=$(cat "$PID")
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && { say "dockerd still up after 60 s: SIGKILL"; kill -KILL "$pid"; }
  rm -f "$PID"
  # dockerd leaves its default network namespace bind-mounted under the exec
  # root; unmounted, the state dir can be deleted (it was "busy" otherwise).
  umount "$STATE/exec/netns/default" 2>/dev/null || true
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
# True when IMAGE lacks the stand-in label HASH (missing, or built from other files).
stale() {
  [[ $(docker image inspect -f '{{index .Config.Labels "sluicegate.standin"}}' "$1" 2>/dev/null) != "$2" ]]
}

# docker build, its output in .cache/build/<log>.log (the tail is shown when it fails).
build() {
  local log=$CACHE/build/$1.log; shift
  mkdir -p "$CACHE/build"
  docker build --network host "$@" >"$log" 2>&1 || { tail -n 40 "$log" >&2; die "docker build $* failed (log: $log)"; }
}

cmd_images() {
  # 1. Debian bookworm from debootstrap, with python3.11 and this machine's CA
  #    bundle and apt sources: stands in for debian:bookworm-slim and python:3.11-slim.
  if ! have_image python:3.11-slim || ! have_image debian:bookworm-slim; then
    local rootfs=$CACHE/build/rootfs mirror
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
    say "debootstrap bookworm from $mirror (about 1 min)"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    nice debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,libpython3.11 \
      bookworm "$rootfs" "$mirror" >"$CACHE/build/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/build/debootstrap.log" >&2; die "debootstrap failed"; }
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$rootfs" update-ca-certificates >/dev/null
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    cp -r /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
    [[ -f /etc/apt/sources.list ]] && cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    docker tag debian:bookworm-slim python:3.11-slim
    rm -rf "$rootfs"
  fi
  # 2. apache/kafka: the Maven jars in the official image's layout and entrypoint.
  # Rebuilt when its files change (their hash is a label on the image).
  local kafka_hash
  kafka_hash=$(cd "$ROOT/compose/engine/kafka" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)
  if stale "apache/kafka:$KAFKA_VERSION" "$kafka_hash"; then
    local libs=$CACHE/kafka-$KAFKA_VERSION/libs ctx=$CACHE/build/kafka-context
    if [[ ! -f $libs/kafka_2.13-$KAFKA_VERSION.jar ]]; then
      say "fetching the Kafka $KAFKA_VERSION jars with Maven"
      mvn -B -q -f "$ROOT/ops/stack/kafka-pom.xml" "-Dmaven.repo.local=$CACHE/m2" \
        "-Dkafka.version=$KAFKA_VERSION" dependency:copy-dependencies "-DoutputDirectory=$libs"
    fi
    rm -rf "$ctx" && mkdir -p "$ctx" && cp -r "$libs" "$ctx/libs" && cp -r "$ROOT/compose/engine/kafka/." "$ctx/"
    say "building apache/kafka:$KAFKA_VERSION (stand-in)"
    build kafka-image -t "apache/kafka:$KAFKA_VERSION" --label "sluicegate.standin=$kafka_hash" \
      -f "$ctx/kafka.Dockerfile" "$ctx"
    rm -rf "$ctx"
  fi
  # 3. The project's own image, built once (with the host network: no NAT here);
  #    `compose up --build` then finds every layer cached.
  say "building sluicegate:local (Dockerfile)"
  build sluicegate-image -t sluicegate:local "$ROOT"
}

# observability.yaml's collector and Jaeger v2 (Prometheus and Grafana need a
# JavaScript build for their UIs: not built here, see README.md).
JAEGER_VERSION=$(sed -n 's/^JAEGER_VERSION=//p' "$ROOT/compose/.env.example")
JAEGER_MODULE_VERSION=${SLUICEGATE_JAEGER_MODULE_VERSION:-v1.64.0}  # = Jaeger v2.1.0
OTELCOL_VERSION=$(sed -n 's/^OTEL_COLLECTOR_VERSION=//p' "$ROOT/compose/.env.example")

cmd_observability() {
  local ctx=$CACHE/build/obs-context
  if ! have_image "otel/opentelemetry-collector-contrib:$OTELCOL_VERSION"; then
    local otelcol
    otelcol=$("$ROOT/.venv/bin/sluicegate" generate collector --cache-dir "$CACHE" | tail -n1)
    [[ -x $otelcol ]] || die "no collector binary from 'sluicegate generate collector' ($otelcol)"
    rm -rf "$ctx" && mkdir -p "$ctx" && cp "$otelcol" "$ctx/otelcol-contrib"
    build otelcol-image -t "otel/opentelemetry-collector-contrib:$OTELCOL_VERSION" \
      -f "$ROOT/compose/engine/otelcol.Dockerfile" "$ctx"
  fi
  local jaeger_hash
  jaeger_hash=$(sha256sum "$ROOT/compose/engine/jaeger.Dockerfile" | cut -c1-16)
  if stale "jaegertracing/jaeger:$JAEGER_VERSION" "$jaeger_hash"; then
    local bin=$CACHE/bin/jaeger-$JAEGER_VERSION
    if [[ ! -x $bin ]]; then
      say "building Jaeger $JAEGER_VERSION from the Go module proxy (10+ min once)"
      local dir src=$CACHE/build/jaeger-src
      dir=$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_MODULE_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
      rm -rf "$src" && cp -r "$dir" "$src" && chmod -R u+w "$src"
      (cd "$src" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$bin.partial" ./cmd/jaeger)
      mv "$bin.partial" "$bin" && rm -rf "$src"
    fi
    rm -rf "$ctx" && mkdir -p "$ctx" && cp "$bin" "$ctx/jaeger"
    # Its built-in all-in-one config reads ./cmd/jaeger/sampling-strategies.json.
    cp "$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_MODULE_VERSION" \
      | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')/cmd/jaeger/sampling-strategies.json" "$ctx/"
    build jaeger-image -t "jaegertracing/jaeger:$JAEGER_VERSION" --label "sluicegate.standin=$jaeger_hash" -f "$ROOT/compose/engine/jaeger.Dockerfile" "$ctx"
  fi
  rm -rf "$ctx"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  images) cmd_images ;;
  observability) cmd_observability ;;
  env) cmd_env ;;
  *) die "usage: $0 install|start|images|observability|stop|env" ;;
esac
