"""A big valid policy.yaml, as a province would write it (issue 11 item 6).

    data = big_policy_yaml()                       # 15,000 sources, 21,000 rules, just under 4 MiB
    data = big_policy_yaml(sources=1500, rules=2100)   # the same shape, a tenth of it

Deterministic (``seed``). Sources: spool folders, platforms by network, cameras matched
by 8-digit region code and type (a third pinned to a network, some with serial ranges),
cameras listed by ID, and one city-wide source per city. Rules: video from every camera
source to its city's VMS, files from every spool folder (six each, by media type) to the
inner spools, view-library, signaling and reverse rules from the platforms; the city-wide
rules come last with narrower limits, so ``policy check`` warns that each overlaps an
earlier rule (and reports no errors). Everything is within ferry/limits.py: at most
POLICY_FILE_MAX bytes (descriptions pad it up to ``target_bytes``). One line per source and
rule (YAML flow mappings): 36,000 entries in 4 MiB leave about 115 bytes each.
"""

from __future__ import annotations

import random

from ferry import limits

MEDIA = ("application/pdf", "image/png", "image/jpeg", "image/gif", "text/plain", "application/zip")
EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpe?g", "image/gif": "gif",
              "text/plain": "txt", "application/zip": "zip"}
CITIES = 14
TARGET_BYTES = limits.POLICY_FILE_MAX - 16 * 1024    # "a 4 MiB policy", with room to spare


def _region(k: int) -> str:
    """A distinct 8-digit region code in Hunan (43): city, district, grass-roots unit."""
    city, rest = k % CITIES + 1, k // CITIES
    return f"43{city:02d}{rest // 40 % 100 + 1:02d}{rest % 40 + 1:02d}"


def big_policy_yaml(sources: int = 15_000, rules: int = 21_000, seed: int = 11,
                    target_bytes: int | None = TARGET_BYTES) -> bytes:
    """policy.yaml of ``sources`` sources and ``rules`` rules (both at least 100)."""
    rng = random.Random(seed)
    n_spool = max(1, sources // 5)
    n_addr = max(1, sources * 2 // 5)
    n_ids = max(1, sources // 10)
    n_city = min(CITIES, sources)
    n_match = sources - n_spool - n_addr - n_ids - n_city
    desc_slots: list[int] = []   # indexes into out of lines that may carry padding
    out: list[str] = []

    def line(text: str, pad: bool = False) -> None:
        if pad:
            desc_slots.append(len(out))
        out.append(text)

    out += ["# A generated province-wide policy (tests/support/bigpolicy.py)",
            "policy: hunan-province", "version: 1",
            "description: every city's social video, view library, signaling and documents",
            "default: deny", "timezone: Asia/Shanghai", "", "sources:"]
    spools = [f"s{i:04d}" for i in range(n_spool)]
    for name in spools:
        line(f"  {name}: {{kind: spool}}", pad=True)
    platforms = [f"p{i:05d}" for i in range(n_addr)]
    for i, name in enumerate(platforms):
        net = f"10.{i // 256 % 256}.{i % 256}.0/24"
        ports = f", ports: [{8000 + i % 1000}], protocol: tcp" if i % 3 == 0 else ""
        line(f"  {name}: {{kind: addresses, addresses: [\"{net}\"]{ports}}}", pad=True)
    cameras: list[tuple[str, int]] = []     # (name, city) of device sources
    for i in range(n_match):
        name, region = f"c{i:05d}", _region(i)
        cameras.append((name, int(region[2:4])))
        serial = ""
        if i % 4 == 1:
            lo = rng.randrange(0, 9_000_000)
            serial = f", serial: {{from: \"{lo:07d}\", to: \"{lo + 999_999:07d}\"}}"
        pinned = f", addresses: [\"172.{16 + i // 65536 % 16}.{i // 256 % 256}.{i % 256}/32\"]" if i % 3 == 0 else ""
        line(f"  {name}: {{kind: devices, match: [{{region: \"{region}\", type: [\"131\", \"132\"]{serial}}}]"
             f"{pinned}}}", pad=True)
    for i in range(n_ids):
        name, region = f"l{i:05d}", _region(n_match + i)
        cameras.append((name, int(region[2:4])))
        ids = sorted({f"{region}00132{rng.randrange(10**7):07d}" for _ in range(3)})
        line(f"  {name}: {{kind: devices, ids: [" + ", ".join(f"\"{x}\"" for x in ids) + "]}", pad=True)
    cities = [f"city-{c:02d}" for c in range(1, n_city + 1)]
    for c, name in enumerate(cities, 1):
        line(f"  {name}: {{kind: devices, match: [{{region: \"43{c:02d}\", type: [\"132\"]}}]}}", pad=True)

    out.append("")
    out.append("destinations:")
    for c in range(1, CITIES + 1):
        out.append(f"  vms-{c:02d}: {{kind: vms}}")
    for k in range(8):
        out.append(f"  spool-{k}: {{kind: spool}}")
    out += ["  view-library: {kind: viid}", "  police-sip: {kind: sip}", "  social-platform: {kind: platform}"]

    out.append("")
    out.append("rules:")
    # the shares of each lane: video 6/21, files 9/21, viid 0.5/21, signaling 1/21, reverse 4.5/21
    n_files = rules * 9 // 21
    n_viid = rules // 42
    n_sig = rules // 21
    n_rev = rules * 9 // 42
    n_video = rules - n_files - n_viid - n_sig - n_rev
    n_city_rules = min(n_city, n_video)
    n_cam_rules = n_video - n_city_rules

    def rule(rid: str, lane: str, frm: str, to: str, section: str, when: str = "") -> None:
        when = f", when: {when}" if when else ""
        line(f"  - {{id: {rid}, lane: {lane}, from: {frm}, to: {to}{when}, {lane}: {section}}}", pad=True)

    widths = ((1920, 1080), (1280, 720), (2560, 1440), (3840, 2160))
    for i in range(n_cam_rules):
        name, city = cameras[i % len(cameras)]
        w, h = widths[i % 4]
        codecs = "[h264, h265]" if i % 5 else "[h264]"
        when = '[{days: [mon, tue, wed, thu, fri], from: "07:00", to: "19:00"}]' if i % 10 == 7 else ""
        section = (f"{{codecs: {codecs}, max_width: {w}, max_height: {h}, max_frame_rate: {25 + i % 2 * 5}, "
                   f"max_bitrate_kbps: {4000 + 1000 * (i % 5)}}}")
        rule(f"v{i:05d}", "video", name, f"vms-{city:02d}", section, when)
    for i in range(n_files):
        spool = spools[i // 3 % len(spools)]
        media = MEDIA[i % 6]
        pattern = f"'\\w{{1,64}}\\.{EXTENSIONS[media]}'"
        rule(f"f{i:05d}", "files", spool, f"spool-{i // 3 % 8}",
             f"{{max_size: {(1 + i % 16) << 20}, media_types: [{media}], name_pattern: {pattern}}}")
    for i in range(n_viid):
        types = "[Face, MotorVehicle]" if i % 2 else "[Person, NonMotorVehicle, Thing]"
        rule(f"i{i:05d}", "viid", platforms[i % len(platforms)], "view-library",
             f"{{object_types: {types}, max_pictures: {1 + i % 8}, max_picture_bytes: 2097152, "
             f"picture_types: [image/jpeg]}}")
    for i in range(n_sig):
        rule(f"g{i:05d}", "signaling", platforms[(n_viid + i) % len(platforms)], "police-sip",
             "{roots: [Notify, Response], cmd_types: [Catalog, Keepalive, Alarm], max_body_bytes: 65536}")
    for i in range(n_rev):
        rule(f"r{i:05d}", "reverse", platforms[(n_viid + n_sig + i) % len(platforms)], "social-platform",
             "{requests: [start_stream, stop_stream]}" if i % 2 else "{requests: [ptz]}")
    for c, name in enumerate(cities[:n_city_rules], 1):
        rule(f"video-{name}", "video", name, f"vms-{c:02d}",
             "{codecs: [h264], max_width: 1280, max_height: 720, max_frame_rate: 25, max_bitrate_kbps: 2000}")

    text = "\n".join(out) + "\n"
    size = len(text.encode())
    if target_bytes is not None and size < target_bytes and desc_slots:
        # pad: a description in some of the flow mappings, each of about the same length
        room = target_bytes - size
        per = max(24, min(120, room // len(desc_slots)))
        count = min(len(desc_slots), room // (per + 15))
        step = len(desc_slots) / count if count else 0
        for k in range(count):
            idx = desc_slots[int(k * step)]
            words = f"generated entry {idx} of the province-wide policy - " + "n" * per
            out[idx] = out[idx][:-1] + f", description: {words[:per]}}}"
        text = "\n".join(out) + "\n"
    data = text.encode()
    if len(data) > limits.POLICY_FILE_MAX:
        raise ValueError(f"generated policy is {len(data)} bytes, over POLICY_FILE_MAX")
    return data
