#!/usr/bin/env bash
# The appliance image: a Debian 12 (bookworm) root file system with ferry installed from a wheel.
#
#   ./run image [OUT.tar]          build (default build/image/ferry-bookworm.tar), and OUT.tar.manifest
#   ./run image --smoke [OUT.tar]  extract it twice and, in chroots: ferry --version, the units
#                                  verified, the base rules checked, a file from an outer agent in
#                                  root A delivered by an inner agent in root B
#   ./run image --help
#
# Environment: SOURCE_DATE_EPOCH (default: the time of the last commit), FERRY_IMAGE_MIRRORS (apt
# source lines separated by '|', default deb.debian.org bookworm, bookworm-updates and
# bookworm-security; give snapshot.debian.org lines to pin the Debian packages),
# FERRY_IMAGE_EXTRAS (ferry's extras to install, e.g. "transcode"; default none), FERRY_IMAGE_ROLE
# (outer or inner: an image for one end, ferry-provision@ROLE and ferry-ROLE enabled and the root
# provisioned without keys; default: both agents enabled, each starting only where provisioned),
# FERRY_PYTHON (the Python with pip and grpcio-tools that builds the wheels; default .venv's,
# made by ./run setup). Needs root and mmdebstrap (installed with apt-get if missing).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DEFAULT_OUT=$REPO/build/image/ferry-bookworm.tar

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'image: %s\n' "$*" >&2; exit 2; }

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --smoke) shift; exec "$HERE/smoke.sh" "${1:-$DEFAULT_OUT}" ;;
    -*) usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { usage >&2; exit 2; }
OUT=$(realpath -m "${1:-$DEFAULT_OUT}")
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root and chroot)"
case "$OUT" in *.tar) ;; *) die "$OUT: the output is a plain tarball, name it *.tar" ;; esac
[ ! -d "$OUT" ] || die "$OUT: is a directory; give the path of a tarball (*.tar)"

if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
fi

case "${FERRY_IMAGE_ROLE:-}" in ""|outer|inner) ;; *) die "FERRY_IMAGE_ROLE=$FERRY_IMAGE_ROLE: give outer, inner or nothing" ;; esac
export FERRY_IMAGE_ROLE=${FERRY_IMAGE_ROLE:-}
PY=${FERRY_PYTHON:-$REPO/.venv/bin/python}
if [ ! -x "$PY" ]; then
    "$REPO/run" setup
fi
"$PY" -c 'import pip, grpc_tools' 2>/dev/null || die "$PY has no pip or grpcio-tools (run ./run setup, or set FERRY_PYTHON)"

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct)}
started=$(date +%s)
WORK=$(mktemp -d /tmp/ferry-image.XXXXXX)
trap 'rm -rf "$WORK" "${part:-}"' EXIT

# 1. ferry's wheel from the tracked files of this checkout (as they are in the work tree), with its
#    generated protobuf code, and the wheels of its dependencies at the versions in constraints.txt.
say "ferry wheel (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
mkdir -p "$WORK/src" "$WORK/wheels"
git -C "$REPO" ls-files -z | tar -C "$REPO" --null --ignore-failed-read -T - -cf - | tar -C "$WORK/src" -xf -
"$PY" "$WORK/src/proto/generate.py" >/dev/null
"$PY" -m pip wheel -q --disable-pip-version-check --no-cache-dir --no-deps -w "$WORK/wheels" "$WORK/src"
wheel=$(ls "$WORK"/wheels/ferry-*.whl)
extras=${FERRY_IMAGE_EXTRAS:-}
spec=$wheel${extras:+[$extras]}
say "dependency wheels from PyPI (constraints.txt)"
"$PY" -m pip download -q --disable-pip-version-check --no-cache-dir --only-binary=:all: \
    -c "$REPO/constraints.txt" -d "$WORK/wheels" "$spec" 2> >(grep -v "^WARNING: Location .* is ignored" >&2)
(cd "$WORK/wheels" && sha256sum ./*.whl) > "$WORK/wheels.sha256"

# 2. the root file system: Debian's packages, then customize.sh inside it (mmdebstrap hooks)
IFS='|' read -r -a MIRRORS <<< "${FERRY_IMAGE_MIRRORS:-deb http://deb.debian.org/debian bookworm main|deb http://deb.debian.org/debian bookworm-updates main|deb http://deb.debian.org/debian-security bookworm-security main}"
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,nftables,iproute2,ca-certificates
mkdir -p "$(dirname "$OUT")"
export FERRY_REPO=$REPO FERRY_WHEELS=$WORK/wheels FERRY_EXTRAS=$extras
say "root file system (mmdebstrap bookworm, $PACKAGES)"
part=${OUT%.tar}.part.tar
mmdebstrap --quiet --mode=root --format=tar --variant=minbase --include="$PACKAGES" \
    --customize-hook='"$FERRY_REPO/appliance/image/customize.sh" "$1"' \
    bookworm "$part" "${MIRRORS[@]}"
mv "$part" "$OUT"

# 3. its manifest: one line per file (kind, mode, owner, sha256, name), to compare two builds
python3 "$HERE/manifest.py" "$OUT" > "$OUT.manifest.part"
mv "$OUT.manifest.part" "$OUT.manifest"
cp "$WORK/wheels.sha256" "$OUT.wheels.sha256"
took=$(( $(date +%s) - started ))
say "built $OUT ($(du -m "$OUT" | cut -f1) MB, $(wc -l < "$OUT.manifest") entries) in ${took}s"
printf 'image=%s sha256=%s manifest_sha256=%s seconds=%s\n' "$OUT" \
    "$(sha256sum "$OUT" | cut -d' ' -f1)" "$(sha256sum "$OUT.manifest" | cut -d' ' -f1)" "$took"
