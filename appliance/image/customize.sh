#!/usr/bin/env bash
# Run by mmdebstrap (--customize-hook, from image.sh) with the new root as $1, before it is packed:
# ferry from the wheels into /opt/ferry/venv, the appliance files (units, sysctl, base nftables
# rules), the units enabled. Environment from image.sh: FERRY_REPO, FERRY_WHEELS, FERRY_EXTRAS, FERRY_IMAGE_ROLE,
# SOURCE_DATE_EPOCH. Nothing here makes keys: each box provisions its own at first boot.
set -euo pipefail
R=$1
A=$FERRY_REPO/appliance
ROLE=${FERRY_IMAGE_ROLE:-}
say() { printf '==> image: %s\n' "$*" >&2; }

# ferry and its dependencies, only from the wheels given (no index), into a virtualenv
say "ferry into /opt/ferry/venv"
install -d "$R/tmp/ferry-wheels"
cp "$FERRY_WHEELS"/*.whl "$R/tmp/ferry-wheels/"
wheel=$(cd "$R/tmp/ferry-wheels" && ls ferry-*.whl)
chroot "$R" python3 -m venv /opt/ferry/venv
chroot "$R" /opt/ferry/venv/bin/python -m pip --isolated install -q --disable-pip-version-check --no-cache-dir --no-compile \
    --no-index --find-links /tmp/ferry-wheels "/tmp/ferry-wheels/$wheel${FERRY_EXTRAS:+[$FERRY_EXTRAS]}"
rm -rf "$R/tmp/ferry-wheels"
# pip itself is not needed to run ferry (an image is replaced whole, not upgraded in place)
chroot "$R" /opt/ferry/venv/bin/python -m pip --isolated uninstall -q -y pip
# byte code compiled once more for everything in the venv, checked by hash and not by the source's
# time (the install time), so that two builds give the same .pyc files
find "$R/opt/ferry/venv" -name __pycache__ -type d -prune -exec rm -rf {} +
chroot "$R" /opt/ferry/venv/bin/python -m compileall -q -j1 --invalidation-mode unchecked-hash /opt/ferry/venv/lib >/dev/null
ln -sf /opt/ferry/venv/bin/ferry "$R/usr/local/bin/ferry"

# the appliance's files from this checkout, where the units expect them: the nftables rules
# (base.nft, loaded by ferry-link@ROLE.service with the host's definitions, and the link rules),
# the README (the units' Documentation=)
shopt -s nullglob
for f in "$A"/nftables/*.nft; do install -D -m 0644 "$f" "$R/usr/share/ferry/nftables/$(basename "$f")"; done
install -D -m 0644 "$FERRY_REPO/README.md" "$R/usr/share/doc/ferry/README.md"
install -D -m 0644 "$A/README.md" "$R/usr/share/doc/ferry/appliance.md"

# systemd units (in /etc/systemd/system, as README "Operations" lists them), sysusers, tmpfiles and sysctl settings
units=()
for f in "$A"/systemd/*.service "$A"/systemd/*.socket "$A"/systemd/*.timer "$A"/systemd/*.target "$A"/systemd/*.path; do
    install -D -m 0644 "$f" "$R/etc/systemd/system/$(basename "$f")"
    units+=("$(basename "$f")")
done
for d in "$A"/systemd/*.d; do       # drop-ins, e.g. ferry-outer.service.d/
    [ -d "$d" ] && cp -r "$d" "$R/etc/systemd/system/"
done
for f in "$A"/sysusers.d/*.conf; do install -D -m 0644 "$f" "$R/usr/lib/sysusers.d/$(basename "$f")"; done
for f in "$A"/tmpfiles.d/*.conf; do install -D -m 0644 "$f" "$R/usr/lib/tmpfiles.d/$(basename "$f")"; done
for f in "$A"/sysctl.d/*.conf; do install -D -m 0644 "$f" "$R/etc/sysctl.d/$(basename "$f")"; done
if compgen -G "$R/usr/lib/sysusers.d/*.conf" >/dev/null; then
    chroot "$R" systemd-sysusers      # the service users now, at fixed places in /etc/passwd
fi
say "units: ${units[*]:-none (appliance/systemd/ has none)}"

# One image serves both ends: every unit with an [Install] section is enabled, and each agent's
# units start only on a host provisioned for that role (`ferry provision --role outer|inner`
# writes /etc/ferry/ROLE.toml and /etc/ferry/link-ROLE.env): until then they are skipped, not
# failed. Keys are never in the image: each host makes its own when provisioned.
enable=()
for u in "${units[@]}"; do
    if grep -q '^\[Install\]' "$R/etc/systemd/system/$u"; then
        case "$u" in
            *@.service)   # a template (ferry-provision@): enabled for the image's role, if it has one
                [ -n "$ROLE" ] && enable+=("${u%@.service}@$ROLE.service") ;;
            ferry-outer.service|ferry-inner.service)
                if [ -z "$ROLE" ] || [ "$u" = "ferry-$ROLE.service" ]; then enable+=("$u"); fi ;;
            *) enable+=("$u") ;;
        esac
    fi
    case "$u" in
        ferry-outer.service|ferry-inner.service)
            role=${u#ferry-}; role=${role%.service}
            install -d "$R/etc/systemd/system/$u.d"
            printf '# the image (appliance/image/customize.sh): enabled in every image, started only where provisioned\n[Unit]\nConditionPathExists=/etc/ferry/%s.toml\n' \
                "$role" > "$R/etc/systemd/system/$u.d/50-image.conf" ;;
        ferry-link@.service)
            install -d "$R/etc/systemd/system/$u.d"
            printf '# the image (appliance/image/customize.sh): only where provisioned\n[Unit]\nConditionPathExists=/etc/ferry/link-%%i.env\n' \
                > "$R/etc/systemd/system/$u.d/50-image.conf" ;;
    esac
done
if ((${#enable[@]})); then
    systemctl --root="$R" enable "${enable[@]}" 2>&1 | sed 's/^/    /' >&2
fi
say "enabled: ${enable[*]:-none}"
# an image for one role: provisioned for it now, without keys (its first boot makes them)
if [ -n "$ROLE" ] && chroot "$R" /usr/local/bin/ferry provision --help 2>/dev/null | grep -q -- --no-keys; then
    chroot "$R" /usr/local/bin/ferry provision --role "$ROLE" --no-keys | sed 's/^/    /' >&2
    say "provisioned for role $ROLE (no keys)"
fi

# reproducible across hosts: not the build host's name and resolver (mmdebstrap copies both)
echo ferry > "$R/etc/hostname"
: > "$R/etc/resolv.conf"
# what ferry and the build were, for an operator on the box
{
    echo "ferry_wheel=$wheel"
    echo "ferry_extras=${FERRY_EXTRAS:-}"
    echo "source_date_epoch=$SOURCE_DATE_EPOCH"
} > "$R/usr/share/ferry/image-build"
