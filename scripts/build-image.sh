#!/usr/bin/env bash
# `make image`: build the Dockerfile with buildah (no daemon, no registry), write its SBOM, print its digest.
#
#   IMAGE       the name to tag (default localhost/headrace:dev)
#   BASE_IMAGE  the Python base both stages start from. Default: a Debian bookworm base this script
#               makes itself with debootstrap (cached in .tools/image-base/), for machines that reach
#               Debian's mirror but no container registry. A registry base works as well, e.g.
#               BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm.
#   CA_BUNDLE   CA certificates the install step trusts (default: this machine's bundle, so a proxy
#               that intercepts TLS with its own CA works). Passed as a build secret: it is mounted for
#               that one RUN and is in no layer of the image.
#
# Needs buildah (and debootstrap for the default base): installed from Debian's packages when missing.
# The build runs with --isolation chroot, which needs no daemon, user namespaces or overlay mounts.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
IMAGE=${IMAGE:-localhost/headrace:dev}
LOCAL_BASE=localhost/headrace-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OUT=${OUT:-.tools/image}
PYTHON=${PYTHON:-.venv/bin/python}
started=$(date +%s)

say() { printf '==> %s\n' "$*" >&2; }

install_missing() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    if [ "$BASE_IMAGE" = "$LOCAL_BASE" ]; then command -v debootstrap >/dev/null || missing+=(debootstrap); fi
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]} from Debian's packages"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The default base: Debian's minimal system plus Python 3.11, its venv module and CA certificates, with
# package caches, documentation and translations removed. Rebuilt only when its tarball is missing.
local_base() {
    buildah inspect --type image "$LOCAL_BASE" >/dev/null 2>&1 && return
    local tarball=.tools/image-base/rootfs.tar
    if [ ! -s "$tarball" ]; then
        say "making the base from Debian's packages (debootstrap bookworm, about a minute)"
        local rootfs
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
            bookworm "$rootfs" "$DEBIAN_MIRROR" >/dev/null
        rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*
        mkdir -p "$(dirname "$tarball")"
        tar -C "$rootfs" --numeric-owner -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    fi
    local ctr
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$tarball" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$ctr"
    buildah commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
}

install_missing
[ "$BASE_IMAGE" = "$LOCAL_BASE" ] && local_base

version=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
secret=()
[ -s "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")

say "building $IMAGE from $BASE_IMAGE"
# The revision is set on the image as well as by the Dockerfile's LABEL: buildah's layer cache reuses that
# LABEL step from an earlier build whose REVISION differed when nothing above it changed (seen: an image built at
# one commit labelled with another that was not its ancestor), and --label applies to the image built.
mkdir -p "$OUT"
buildah bud --isolation chroot --layers --quiet --format oci \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --label "org.opencontainers.image.revision=$revision" \
    "${secret[@]}" --iidfile "$OUT/iid" -t "$IMAGE" . >/dev/null

# The SBOM lists what the image's virtualenv holds: cyclonedx-py (from .venv, pure Python, mounted
# read-only for this one command) reads the distributions the image's own interpreter sees.
tools=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
sbom_ctr=$(buildah from --pull-never "$IMAGE")
trap 'buildah rm "$sbom_ctr" >/dev/null' EXIT
buildah run --isolation chroot -v "$tools:/sbom-tools:ro" -v "$ROOT/pyproject.toml:/sbom-tools-pyproject.toml:ro" \
    "$sbom_ctr" -- python3 -I -W ignore -c 'import sys; sys.path.append("/sbom-tools"); sys.argv[0] = "cyclonedx-py"
from cyclonedx_py._internal.cli import run; sys.exit(run())' environment --pyproject /sbom-tools-pyproject.toml \
    --output-format JSON --output-reproducible /opt/headrace/bin/python >"$OUT/sbom.cdx.json"

digest=$(buildah inspect --type image --format '{{.FromImageDigest}}' "$IMAGE")
elapsed=$(($(date +%s) - started))
echo "image:  $IMAGE"
echo "id:     $(cat "$OUT/iid")"
echo "digest: $digest"
echo "sbom:   $OUT/sbom.cdx.json"
echo "built in ${elapsed}s"
