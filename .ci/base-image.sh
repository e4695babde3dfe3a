#!/usr/bin/env bash
# Seed the base image debian:bookworm-slim locally (no container registry is reachable):
# debootstrap's minbase variant, made as lean as Debian's official slim images: dpkg is told
# never to unpack docs, man and info pages or translations (/etc/dpkg/dpkg.cfg.d/), the ones
# debootstrap already unpacked are removed, and the image keeps no apt lists, no .deb files
# and no logs. Packages installed FROM it later get the same treatment.
#
#   bash .ci/base-image.sh [TAG]        # TAG defaults to debian:bookworm-slim
#   FORCE=1 bash .ci/base-image.sh ...  # rebuild even when TAG is already current
#
# The image carries the label org.celery-fleet.base=<revision>. A TAG without it, or with
# an older revision (an earlier, heavier seed on a warm machine), is built again and retagged;
# a current one is left alone, so a second run costs one `docker image inspect`.
set -o errexit -o pipefail -o nounset

TAG=${1:-debian:bookworm-slim}
LABEL=org.celery-fleet.base
# Bump when the recipe below changes, so that warm machines build the image again.
REVISION=2

log() { printf '[base-image] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null || true)
if [ "$have" = "$REVISION" ] && [ -z "${FORCE:-}" ]; then
  exit 0
fi
log "building $TAG (revision $REVISION; found: ${have:-none}) with debootstrap"
started=$(date +%s)

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap '$SUDO rm -rf "$rootfs"' EXIT

$SUDO debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >/dev/null

# What dpkg does not unpack from now on: the paths Debian's official slim images exclude,
# keeping each package's copyright file (the licence text that must go with the binaries).
$SUDO tee "$rootfs/etc/dpkg/dpkg.cfg.d/celery-fleet-slim" >/dev/null <<'EOF'
# celery-fleet base image (.ci/base-image.sh): no docs, man or info pages, translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF

# apt: no package caches (a container installs once and never again), no translated package
# descriptions, and the .deb files removed after each run, so a layer never keeps them even
# when a Dockerfile forgets `apt-get clean`.
$SUDO tee "$rootfs/etc/apt/apt.conf.d/90celery-fleet-slim" >/dev/null <<'EOF'
// celery-fleet base image (.ci/base-image.sh)
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF

# Remove what debootstrap unpacked before the excludes existed, and what it leaves behind.
$SUDO find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -path '*/usr/share/doc/*/copyright' -delete
$SUDO find "$rootfs/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
for d in man info groff lintian linda locale; do
  if [ -d "$rootfs/usr/share/$d" ]; then $SUDO find "$rootfs/usr/share/$d" -mindepth 1 -delete; fi
done
$SUDO find "$rootfs/var/lib/apt/lists" "$rootfs/var/cache/apt" -mindepth 1 ! -type d -delete
$SUDO find "$rootfs/var/log" "$rootfs/tmp" "$rootfs/var/tmp" -mindepth 1 ! -type d -delete
$SUDO rm -f "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
  "$rootfs/var/cache/ldconfig/aux-cache"
# Host-specific files debootstrap copied from this machine; Docker provides its own.
$SUDO rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
$SUDO truncate -s 0 "$rootfs/etc/machine-id" 2>/dev/null || true

$SUDO tar --numeric-owner -C "$rootfs" -c . \
  | docker import --change "LABEL $LABEL=$REVISION" --change 'CMD ["bash"]' - "$TAG" >/dev/null
log "$TAG ready in $(($(date +%s) - started)) s: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1 / 1e6}')"
