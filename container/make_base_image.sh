#!/usr/bin/env bash
# Make a minimal Debian base image locally (no image registry is reachable here).
# debootstrap a bookworm minbase root from the machine's Debian mirror and `docker import` it.
# Usage: container/make_base_image.sh [TAG]   (default local/debian:bookworm)
# Env: FORCE=1 rebuilds even when TAG exists; DEBIAN_MIRROR (default: the first deb.debian.org-style URI in /etc/apt/sources.list*),
#      DOCKER (default /usr/bin/docker).
set -euo pipefail
TAG="${1:-local/debian:bookworm}"
DOCKER="${DOCKER:-/usr/bin/docker}"

if [[ "${FORCE:-0}" != 1 ]] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG already present"
    exit 0
fi

if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
    # The mirror apt already uses; deb822 (URIs:) or one-line (deb URL suite ...) format.
    DEBIAN_MIRROR="$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                           /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
        | sed -nE 's/^URIs:[[:space:]]*//p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//p' \
        | sed -E 's/[[:space:]].*$//' | grep -E '/debian/?$' | head -n1 || true)"
fi
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 1; }

ROOT="$(mktemp -d /tmp/clip-search-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap bookworm from $DEBIAN_MIRROR into $ROOT"
debootstrap --variant=minbase bookworm "$ROOT" "$DEBIAN_MIRROR" >/dev/null
# Slim the root the way Docker's official debian:slim images do.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
# Use the same mirror inside the image as on the host.
echo "deb $DEBIAN_MIRROR bookworm main" > "$ROOT/etc/apt/sources.list"
tar -C "$ROOT" -c . | "$DOCKER" import - "$TAG" >/dev/null
echo "made base image $TAG"
