#!/usr/bin/env bash
# Smoke check of an image built by `./run image OUT.tar`:  ./run image --smoke OUT.tar
#
# Extracts the root file system twice (root A: the outer host, root B: the inner host) and, in
# chroots (systemd-nspawn needs systemd as PID 1 and a container-capable host; a chroot runs
# anywhere as root):
#   1. ferry --version;
#   2. systemd-analyze verify of every ferry unit in the image (the image's own systemd), and each
#      unit with an [Install] section enabled;
#   3. the base nftables ruleset loaded, in a network namespace of its own (the host's rules are
#      never touched);
#   4. provisioning of each root (`ferry provision --role outer|inner`, or keys and folders made
#      here if the image's ferry has no such command), the public keys exchanged;
#   5. an inner agent in root B and an outer agent in root A, each as its service user if the
#      image has one, linked over loopback UDP: a file dropped in A's spool must appear in B's
#      spool with the same SHA-256, and both audit trails verify.
# Every process started and every mount made is stopped and removed on exit (trap), and then
# the extracted roots are removed. Exit 0 and a last line "smoke ok: ..." or 1 naming the step.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
IMG=${1:?usage: smoke.sh IMAGE.tar}
[ -f "$IMG" ] || { echo "smoke: $IMG: no such image (build it with ./run image $IMG)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "smoke: needs root (chroot, mount)" >&2; exit 2; }
IMG=$(realpath "$IMG")

started=$(date +%s)
W=$(mktemp -d /tmp/ferry-smoke.XXXXXX)
A=$W/a
B=$W/b
pids=()
mounts=()

say() { printf '==> %s\n' "$*"; }
fail() { printf 'smoke FAILED: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$? p i
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || true
    done
    # never remove a tree that still has something mounted in it
    if grep -q " $W/" /proc/mounts; then
        echo "smoke: $W still has mounts; left in place" >&2
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# a clean environment inside a chroot; env execs chroot, which execs the command: one process,
# whose pid $! is when started in the background
CLEAN=(env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root)
in_root() {  # in_root ROOT CMD...
    local root=$1; shift
    "${CLEAN[@]}" chroot "$root" "$@"
}

say "extracting $IMG into two roots"
for r in "$A" "$B"; do
    mkdir -p "$r"
    tar -C "$r" --numeric-owner -xpf "$IMG"
    mount -t proc proc "$r/proc"; mounts+=("$r/proc")
    mount -t tmpfs -o mode=0755 tmpfs "$r/run"; mounts+=("$r/run")
    mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"; mounts+=("$r/tmp")
done

# 1. the version
version=$(in_root "$A" ferry --version) || fail "ferry --version in root A"
echo "$version"

# 2. the units: verified by the image's own systemd, and enabled
mapfile -t unitfiles < <(cd "$A/etc/systemd/system" && ls ferry*.service ferry*.socket ferry*.timer 2>/dev/null || true)
verified=()
for f in "${unitfiles[@]}"; do
    case "$f" in
        *@.service) names=("${f%@.service}@outer.service" "${f%@.service}@inner.service") ;;
        *) names=("$f") ;;
    esac
    for u in "${names[@]}"; do
        out=$(in_root "$A" systemd-analyze verify --man=no "$u" 2>&1) || fail "systemd-analyze verify $u: $out"
        # verify exits 0 on some warnings; a ferry unit must draw none
        if grep -i "ferry" <<< "$out" | grep -v "^$" >/dev/null; then fail "systemd-analyze verify $u: $out"; fi
        verified+=("$u")
    done
    if grep -q '^\[Install\]' "$A/etc/systemd/system/$f" && [[ "$f" != *@.service ]]; then
        state=$(in_root "$A" systemctl is-enabled "$f" 2>&1 || true)
        [ "$state" = enabled ] || fail "$f is not enabled in the image (systemctl is-enabled: $state)"
    fi
done
if ((${#verified[@]})); then
    echo "units verified: ${#unitfiles[@]} files (${verified[*]}), enabled where they have [Install]"
else
    echo "units verified: 0 files (the image has no ferry units: appliance/systemd/ had none at build)"
fi

# 3. provisioning (the image's `ferry provision` if it has one), the public keys exchanged
if in_root "$A" ferry provision --help >/dev/null 2>&1; then
    for pair in "$A:outer" "$B:inner"; do
        r=${pair%%:*}; role=${pair#*:}
        mkdir -p "$r/tmp/policy" && cp -r "$REPO/policy/demo/." "$r/tmp/policy/"
        in_root "$r" ferry provision --role "$role" --policy /tmp/policy > "$W/provision-$role.log" 2>&1 ||
            fail "ferry provision --role $role: $(cat "$W/provision-$role.log")"
        echo "    $role: ferry provision made $(wc -l < "$W/provision-$role.log") changes"
    done
    provisioned="ferry provision"
else
    for pair in "$A:outer" "$B:inner"; do
        r=${pair%%:*}; role=${pair#*:}
        install -d "$r/etc/ferry/keys" "$r/etc/ferry/policy" "$r/var/lib/ferry/$role/spool" \
            "$r/var/lib/ferry/$role/state" "$r/var/log/ferry/$role"
        cp -r "$REPO/policy/demo/." "$r/etc/ferry/policy/"
        in_root "$r" ferry keys new "$role" --dir /etc/ferry/keys >/dev/null || fail "ferry keys new $role"
    done
    provisioned="keys and folders made by smoke.sh (the image's ferry has no provision command)"
fi
cp "$A/etc/ferry/keys/outer.pub" "$B/etc/ferry/keys/outer.pub"
cp "$B/etc/ferry/keys/inner.pub" "$A/etc/ferry/keys/inner.pub"
echo "provisioned: $provisioned; public keys exchanged"

# 4. the base rules, loaded in a network namespace of its own (with the provisioned definitions)
if [ -f "$A/usr/share/ferry/nftables/base.nft" ]; then
    defs="-D LINK_IF=ferry0 -D LINK_PORT=47000 -D ADMIN_IF=eth0 -D ADMIN_TCP={22} -D INGEST_IF=eth1 -D INGEST_UDP={5060} -D INGEST_TCP={5060}"
    if [ -f "$A/etc/ferry/link-outer.env" ]; then
        defs=$(. "$A/etc/ferry/link-outer.env" && echo "$FERRY_NFT_BASE")
    fi
    # shellcheck disable=SC2086
    out=$(unshare --net env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$A" \
          sh -c "nft $defs -f /usr/share/ferry/nftables/base.nft && nft list tables" 2>&1) ||
        fail "base rules do not load: $out"
    echo "base rules loaded (in a network namespace of their own): $(echo $out | tr '\n' ' ')"
else
    echo "base rules: the image has no /usr/share/ferry/nftables/base.nft (appliance/nftables/ had none at build)"
fi

# 5. a file from an outer agent in root A to an inner agent in root B, over loopback
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$A/etc/ferry/smoke-outer.toml" <<TOML
# the smoke check's outer agent (appliance/image/smoke.sh): loopback instead of the link
[agent]
name = "smoke-outer"
key = "/etc/ferry/keys/outer.key"
peer_public = "/etc/ferry/keys/inner.pub"
policy = "/etc/ferry/policy"
audit_dir = "/var/log/ferry/outer"
state_dir = "/var/lib/ferry/outer/state"
[link]
peer_host = "127.0.0.1"
peer_port = $port
bind_host = "127.0.0.1"
rate_mbps = 50.0
[files]
spool = "/var/lib/ferry/outer/spool"
source = "outer-spool"
destination = "inner-spool"
settle = 0.3
scan_interval = 0.2
TOML
cat > "$B/etc/ferry/smoke-inner.toml" <<TOML
# the smoke check's inner agent (appliance/image/smoke.sh): loopback instead of the link
[agent]
name = "smoke-inner"
key = "/etc/ferry/keys/inner.key"
peer_public = "/etc/ferry/keys/outer.pub"
policy = "/etc/ferry/policy"
audit_dir = "/var/log/ferry/inner"
state_dir = "/var/lib/ferry/inner/state"
[link]
listen_host = "127.0.0.1"
listen_port = $port
[files]
spool = "/var/lib/ferry/inner/spool"
TOML

user_of() {  # the role's service user if the root has it, else root
    if grep -q "^ferry-$2:" "$1/etc/passwd"; then echo "ferry-$2"; else echo root; fi
}
uo=$(user_of "$A" outer)
ui=$(user_of "$B" inner)
"${CLEAN[@]}" chroot --userspec="$ui:$ui" "$B" ferry inner --config /etc/ferry/smoke-inner.toml > "$W/inner.log" 2>&1 &
pids+=($!)
pid_inner=$!
# the inner agent listens before anything is sent (a one-way link cannot ask again)
for _ in $(seq 600); do
    ss -Hlun "sport = :$port" 2>/dev/null | grep -q . && break
    kill -0 "$pid_inner" 2>/dev/null || fail "the inner agent stopped: $(tail -20 "$W/inner.log")"
    sleep 0.1
done
ss -Hlun "sport = :$port" | grep -q . || fail "the inner agent does not listen on 127.0.0.1:$port after 60 s"
"${CLEAN[@]}" chroot --userspec="$uo:$uo" "$A" ferry outer --config /etc/ferry/smoke-outer.toml > "$W/outer.log" 2>&1 &
pids+=($!)
pid_outer=$!
echo "agents: inner in root B as $ui (pid $pid_inner), outer in root A as $uo (pid $pid_outer), link 127.0.0.1:$port"

name=smoke-report.txt
spool=$A/var/lib/ferry/outer/spool
{ echo "ferry image smoke check $(date -u +%FT%TZ) $RANDOM$RANDOM"; for i in $(seq 40); do echo "line $i of a plain text report"; done; } \
    > "$spool/.$name.part"
chown "$(stat -c %u:%g "$spool")" "$spool/.$name.part"
want=$(sha256sum < "$spool/.$name.part" | cut -d' ' -f1)
mv "$spool/.$name.part" "$spool/$name"
sent_at=$(date +%s.%N)
got=$B/var/lib/ferry/inner/spool/$name
for _ in $(seq 1200); do
    [ -f "$got" ] && break
    kill -0 "$pid_inner" 2>/dev/null || fail "the inner agent stopped: $(tail -20 "$W/inner.log")"
    kill -0 "$pid_outer" 2>/dev/null || fail "the outer agent stopped: $(tail -20 "$W/outer.log")"
    sleep 0.1
done
[ -f "$got" ] || fail "$name did not reach root B's spool in 120 s; outer: $(tail -5 "$W/outer.log"); inner: $(tail -5 "$W/inner.log")"
crossed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$sent_at" "$(date +%s.%N)")
[ "$(sha256sum < "$got" | cut -d' ' -f1)" = "$want" ] || fail "$name arrived with other content"
echo "delivered: $name in root B's spool, same SHA-256, ${crossed} s after it was dropped in root A's"

# stop the agents (SIGTERM: exit 0) and verify both trails
for p in "$pid_outer" "$pid_inner"; do
    kill -TERM "$p"
    rc=0; wait "$p" || rc=$?
    [ "$rc" = 0 ] || fail "an agent exited $rc when stopped"
done
pids=()
in_root "$A" ferry audit verify /var/log/ferry/outer --key /etc/ferry/keys/outer.pub >/dev/null ||
    fail "the outer trail does not verify"
in_root "$B" ferry audit verify /var/log/ferry/inner --key /etc/ferry/keys/inner.pub >/dev/null ||
    fail "the inner trail does not verify"
echo "audit trails verified in both roots"
echo "smoke ok: file crossed from root A to root B ($(( $(date +%s) - started )) s in all)"
