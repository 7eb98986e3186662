"""The SIPp scenarios of tests/support/sipp/ checked SIPp against SIPp, so that the signaling tests
can trust them as GB/T 28181 devices and platforms: each pair ends with SIPp's exit code 0, a
scenario fails (exit code 1) when its peer breaks the rule it checks, and tshark dissects every
message as well-formed SIP."""
from __future__ import annotations

import hashlib
import re
import socket

import pytest

from rootcheck import need_root
from sipp import DEVICE_ID, DOMAIN, PLATFORM_ID, Sipp, free_port, write_catalog
from tshark import LoopbackCapture, sip_datagrams_pcap, tshark_sip
from waiting import wait_until

pytestmark = pytest.mark.e2e

DEVICES = [("34020000001320000001", "secret1"), ("34020000001320000002", "secret2"),
           ("34020000001110000003", "secret3")]


def unique(messages):
    """Messages once each: a UDP retransmission is traced again."""
    seen, out = set(), []
    for m in messages:
        key = (m.direction, m.header("Call-ID"), m.header("CSeq"), m.first_line)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _platform(tmp_path, accounts=DEVICES, transport="u1", **kw) -> Sipp:
    return Sipp("platform_uas.xml", injection_csv=accounts, transport=transport, timeout=60,
                work_dir=tmp_path / "platform", **kw)


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_devices_register_with_digest_and_the_platform_verifies_it(tmp_path, transport):
    with _platform(tmp_path, transport=transport) as platform:
        with Sipp("device_register.xml", remote=("127.0.0.1", platform.port), injection_csv=DEVICES,
                  calls=len(DEVICES), rate=10, transport=transport, timeout=30, work_dir=tmp_path / "dev") as dev:
            devices = dev.wait(45)
        server = platform.stop()
    assert devices.successful == 3 and devices.failed == 0
    # every device: REGISTER, 401 with a digest challenge, REGISTER with Authorization, 200
    challenges = unique(devices.received("401"))
    assert len(challenges) == 3
    assert all(re.match(r'Digest realm="3402000000", nonce="[^"]+", algorithm=MD5', c.header("WWW-Authenticate"))
               for c in challenges)
    authorized = [m for m in unique(devices.sent("REGISTER")) if m.header("Authorization")]
    assert sorted(re.search(r'username="([0-9]+)"', m.header("Authorization")).group(1) for m in authorized) == \
        sorted(d for d, _ in DEVICES)
    # the digest uri is the Request-URI (-auth_uri), as a GB/T 28181 server expects
    assert all(f'uri="sip:{PLATFORM_ID}@{DOMAIN}"' in m.header("Authorization") for m in authorized)
    assert [m.header("Expires") for m in authorized] == ["3600"] * 3
    assert len(unique(devices.received("200"))) == 3
    assert server.exit_code == 0 and server.failed == 0 and server.successful >= 3
    assert {m.transport for m in devices.trace} == {"UDP" if transport == "u1" else "TCP"}


def test_many_devices_register_from_one_csv(tmp_path):
    """One device a CSV line: 200 devices, each its own Call-ID and digest, from one SIPp."""
    devices = [(f"3402000000132{n:07d}", f"pw{n}") for n in range(200)]
    with _platform(tmp_path, accounts=devices) as platform:
        with Sipp("device_register.xml", remote=("127.0.0.1", platform.port), injection_csv=devices,
                  calls=len(devices), rate=200, timeout=60, work_dir=tmp_path / "dev") as dev:
            result = dev.wait(90)
        server = platform.stop()
    assert result.successful == 200 and result.failed == 0
    users = {re.search(r'username="([0-9]+)"', m.header("Authorization")).group(1)
             for m in result.sent("REGISTER") if m.header("Authorization")}
    assert users == {d for d, _ in devices}
    assert server.failed == 0


def test_harness_reports_sipps_error_and_always_stops_it(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="broken">\n'
                      '<send><![CDATA[\n\nMESSAGE sip:[no_such_key]@x SIP/2.0\nContent-Length: 0\n\n]]></send>\n'
                      "</scenario>\n")
    with Sipp(broken, remote=("127.0.0.1", free_port()), calls=1, work_dir=tmp_path / "b") as sipp:
        with pytest.raises(AssertionError, match="Unsupported keyword 'no_such_key'"):
            sipp.wait(30)
    assert sipp.result().exit_code == 1 and not sipp.result().stats     # SIPp says 1 for a bad scenario too
    # a UAS with nothing to do runs until stopped; stop() ends it however it is
    with Sipp("platform_uas.xml", injection_csv=DEVICES, timeout=120, work_dir=tmp_path / "p") as uas:
        assert uas.running()
        with pytest.raises(AssertionError, match="still running"):
            uas.wait(1)
    assert not uas.running()


def test_a_wrong_password_or_unknown_device_gets_403_and_fails_both_sides(tmp_path):
    accounts = [("34020000001320000001", "secret1")]
    with _platform(tmp_path, accounts=accounts) as platform:
        with Sipp("device_register.xml", remote=("127.0.0.1", platform.port),
                  injection_csv=[("34020000001320000001", "wrong"), ("34020000001320000009", "secret1")],
                  calls=2, rate=10, timeout=30, work_dir=tmp_path / "dev") as dev:
            devices = dev.wait(45, expect=1)           # 1: at least one call failed
        server = platform.stop()
    assert devices.failed == 2 and devices.successful == 0
    assert len(unique(devices.received("403"))) == 2 and not devices.received("200")
    assert server.failed == 2
    assert "REGISTER refused: user 34020000001320000001" in server.errors
    assert "REGISTER refused: user 34020000001320000009" in server.errors


@pytest.mark.parametrize("case", ["valid", "forged_nonce", "wrong_realm", "wrong_uri_digest"])
def test_platform_uas_checks_a_hand_made_digest(tmp_path, case):
    """The platform's check is RFC 2617 digest computed independently here (hashlib): the nonce
    must be the one it issued, the realm its own, the response right for the uri sent."""
    user, password = DEVICES[0]
    with _platform(tmp_path) as platform, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(20)
        s.sendto(_register(s.getsockname()[1], cseq=1), ("127.0.0.1", platform.port))
        challenge = s.recvfrom(65536)[0].decode()
        assert challenge.startswith("SIP/2.0 401 ")
        nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)
        realm = re.search(r'realm="([^"]+)"', challenge).group(1)
        uri = f"sip:{PLATFORM_ID}@{DOMAIN}"
        digest_uri = uri
        if case == "forged_nonce":
            nonce = "0123456789abcdef"
        elif case == "wrong_realm":
            realm = "3402000001"
        elif case == "wrong_uri_digest":
            digest_uri = "sip:somewhere.else"
        ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"REGISTER:{digest_uri}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        if case == "wrong_uri_digest":
            digest_uri = uri          # the digest was made for another uri than the one it names
        auth = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{digest_uri}", '
                f'response="{response}", algorithm=MD5')
        s.sendto(_register(s.getsockname()[1], cseq=2, authorization=auth), ("127.0.0.1", platform.port))
        answer = s.recvfrom(65536)[0].decode()
        server = platform.stop()
    if case == "valid":
        assert answer.startswith("SIP/2.0 200 OK") and "\r\nExpires: 3600\r\n" in answer
        assert server.failed == 0
    else:
        assert answer.startswith("SIP/2.0 403 Forbidden")
        assert server.failed == 1 and "REGISTER refused" in server.errors


@pytest.mark.parametrize("mode", ["reregister", "unregister"])
def test_register_refresh_and_unregister_reuse_the_call_id(tmp_path, mode):
    with _platform(tmp_path) as platform:
        with Sipp("device_register.xml", remote=("127.0.0.1", platform.port), injection_csv=DEVICES[:1],
                  calls=1, variables={"mode": mode, "hold_ms": 300}, timeout=30, work_dir=tmp_path / "dev") as dev:
            devices = dev.wait(45)
        platform.stop()
    registers = unique(devices.sent("REGISTER"))
    assert len(registers) == 4                               # challenged twice: the platform challenges each
    assert len({m.header("Call-ID") for m in registers}) == 1
    assert [m.header("CSeq") for m in registers] == ["1 REGISTER", "2 REGISTER", "3 REGISTER", "4 REGISTER"]
    expires = [m.header("Expires") for m in registers]
    assert expires == (["3600"] * 4 if mode == "reregister" else ["3600", "3600", "0", "0"])


def test_keepalives_and_alarms_are_manscdp_messages_the_platform_accepts(tmp_path):
    with _platform(tmp_path) as platform:
        with Sipp("device_keepalive.xml", remote=("127.0.0.1", platform.port), injection_csv=DEVICES[:1],
                  calls=3, rate=20, variables={"sn_base": 100}, timeout=30, work_dir=tmp_path / "ka") as ka:
            keepalives = ka.wait(45)
        with Sipp("device_alarm.xml", remote=("127.0.0.1", platform.port), injection_csv=DEVICES[1:2],
                  calls=1, timeout=30, work_dir=tmp_path / "alarm") as al:
            alarms = al.wait(45)
        server = platform.stop()
    sent = unique(keepalives.sent("MESSAGE"))
    assert [re.search(rb"<SN>([0-9]+)</SN>", m.body).group(1) for m in sent] == [b"101", b"102", b"103"]
    assert all(m.header("Content-Type") == "Application/MANSCDP+xml" for m in sent)
    assert all(b"<CmdType>Keepalive</CmdType>" in m.body and b"<DeviceID>34020000001320000001</DeviceID>" in m.body
               for m in sent)
    assert len(unique(keepalives.received("200"))) == 3
    (alarm,) = unique(alarms.sent("MESSAGE"))
    text = alarm.body.decode("gb2312")
    assert "<CmdType>Alarm</CmdType>" in text and "<AlarmDescription>移动侦测</AlarmDescription>" in text
    assert text.startswith('<?xml version="1.0" encoding="GB2312"?>')
    assert server.exit_code == 0 and server.successful >= 4


def test_platform_uas_fails_a_message_that_is_not_manscdp(tmp_path):
    with _platform(tmp_path) as platform:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(_message("text/plain", b"hello"), ("127.0.0.1", platform.port))
        wait_until(lambda: platform.result().failed, 20, "the platform failing the call")   # stats: every second
        server = platform.stop()
    assert server.failed == 1 and server.successful == 0
    assert "regexp" in server.errors.lower()


@pytest.mark.parametrize("items,per_page", [(5, 2), (1, 10), (7, 7)])
def test_platform_catalog_query_checks_the_paging_of_device_uas(tmp_path, items, per_page):
    ids = [f"3402000000131000{n:04d}" for n in range(1, items + 1)]
    catalog = write_catalog(tmp_path / "catalog", ids, per_page=per_page)
    with Sipp("device_uas.xml", variables=catalog, timeout=60, work_dir=tmp_path / "dev") as device:
        with Sipp("platform_uac_catalog.xml", remote=("127.0.0.1", device.port), timeout=30,
                  variables={"sn": 4711, "wait_ms": 5000}, work_dir=tmp_path / "platform") as platform:
            result = platform.wait(45)
        device.stop()
    pages = unique(result.received("MESSAGE"))
    assert len(pages) == -(-items // per_page)
    assert sum(len(re.findall(rb"<Item>", p.body)) for p in pages) == items
    assert all(b"<SumNum>%d</SumNum>" % items in p.body and b"<SN>4711</SN>" in p.body for p in pages)
    assert len({p.header("Call-ID") for p in pages}) == len(pages)     # each page its own Call-ID
    assert "Camera 1" in pages[0].body.decode("gb2312")


@pytest.mark.parametrize("lie", ["sum_num_too_big", "sum_num_too_small"])
def test_platform_catalog_query_fails_on_invalid_paging(tmp_path, lie):
    catalog = write_catalog(tmp_path / "catalog", [f"3402000000131000{n:04d}" for n in range(1, 6)], per_page=2)
    if lie == "sum_num_too_big":
        catalog["sum_num"] = "6"          # the items never add up: the platform waits wait_ms, then fails
    elif lie == "sum_num_too_small":
        catalog["sum_num"] = "4"          # more items than SumNum
    with Sipp("device_uas.xml", variables=catalog, timeout=60, work_dir=tmp_path / "dev") as device:
        with Sipp("platform_uac_catalog.xml", remote=("127.0.0.1", device.port), timeout=30,
                  variables={"sn": 1, "wait_ms": 1500}, work_dir=tmp_path / "platform") as platform:
            result = platform.wait(45, expect=1)
        device.stop()
    assert result.failed == 1
    assert "Catalog" in result.errors


@pytest.mark.parametrize("pages,complaint", [
    ([(1, 1, 1)], "bad pages"),                   # SN 1 to a query with SN 2
    ([(2, 2, 1), (2, 4, 2)], "the same on every page: false"),   # SumNum 2 then 4: 3 items, mean SumNum 3
    ([(2, None, 1)], "bad pages"),                # no SumNum
])
def test_platform_catalog_refuses_hand_made_bad_pages(tmp_path, pages, complaint):
    """Pages from a hand-made device (fresh Call-IDs, as ferry sends them): the query's SN, a
    SumNum on every page and the same one everywhere are required."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(20)
        with Sipp("platform_uac_catalog.xml", remote=("127.0.0.1", s.getsockname()[1]), timeout=30,
                  variables={"sn": 2, "wait_ms": 3000}, work_dir=tmp_path / "platform") as platform:
            query, peer = s.recvfrom(65536)
            s.sendto(_response_to(query, 200, "OK"), peer)
            for n, (sn, sum_num, num) in enumerate(pages):
                items = "".join(f"<Item>\r\n<DeviceID>3402000000131000{n}{k:03d}</DeviceID>\r\n</Item>\r\n"
                                for k in range(num))
                body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n'
                        f"<SN>{sn}</SN>\r\n<DeviceID>{DEVICE_ID}</DeviceID>\r\n"
                        + (f"<SumNum>{sum_num}</SumNum>\r\n" if sum_num is not None else "")
                        + f'<DeviceList Num="{num}">\r\n{items}</DeviceList>\r\n</Response>\r\n').encode()
                s.sendto(_message("Application/MANSCDP+xml", body, call_id=f"fresh-{n}"), peer)
                assert s.recvfrom(65536)[0].startswith(b"SIP/2.0 200 OK")
            result = platform.wait(45, expect=1)
    assert "invalid Catalog paging" in result.errors and complaint in result.errors


@pytest.mark.parametrize("query", ["DeviceInfo", "DeviceStatus"])
def test_device_uas_answers_device_info_and_status(tmp_path, query):
    with Sipp("device_uas.xml", variables={"channels": 4}, timeout=60, work_dir=tmp_path / "dev") as device:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(20)
            body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>{query}</CmdType>\r\n'
                    f"<SN>7</SN>\r\n<DeviceID>{DEVICE_ID}</DeviceID>\r\n</Query>\r\n").encode()
            s.sendto(_message("Application/MANSCDP+xml", body, port=s.getsockname()[1]), ("127.0.0.1", device.port))
            assert s.recvfrom(65536)[0].startswith(b"SIP/2.0 200 OK")
            answer, peer = s.recvfrom(65536)
            s.sendto(_response_to(answer, 200, "OK"), peer)
        result = device.stop()
    assert answer.startswith(f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0".encode())
    body = answer.split(b"\r\n\r\n", 1)[1].decode("gb2312")
    assert f"<CmdType>{query}</CmdType>" in body and "<SN>7</SN>" in body and f"<DeviceID>{DEVICE_ID}<" in body
    if query == "DeviceInfo":
        assert "<Channel>4</Channel>" in body and "摄像机" in body
    else:
        assert "<Online>ONLINE</Online>" in body
    assert result.exit_code == 0 and result.successful == 1 and result.failed == 0


@pytest.mark.parametrize("answer,expect,code", [("200", "200", 0), ("403", "403", 0), ("404", "404", 0),
                                                ("408", "408", 0), ("486", "486", 0), ("486", "200", 1),
                                                ("200", "404", 1)])
def test_platform_invite_against_a_camera(tmp_path, answer, expect, code):
    rtp_port = free_port()
    with Sipp("camera_uas.xml", variables={"answer": answer}, calls=1, timeout=60, work_dir=tmp_path / "cam") as cam:
        with Sipp("platform_invite.xml", remote=("127.0.0.1", cam.port), timeout=30,
                  variables={"expect": expect, "hold_ms": 200, "rtp_port": rtp_port, "ssrc": "0340200042"},
                  calls=1, work_dir=tmp_path / "platform") as platform:
            result = platform.wait(45, expect=code)
        camera = cam.wait(45)
    (invite,) = {m.header("Call-ID"): m for m in result.sent("INVITE")}.values()
    sdp = invite.body.decode()
    for line in ("s=Play", f"m=video {rtp_port} RTP/AVP 96 98 97", "a=recvonly", "a=rtpmap:96 PS/90000",
                 "y=0340200042", "c=IN IP4 127.0.0.1", f"u={DEVICE_ID}:0"):
        assert line + "\r\n" in sdp
    assert invite.header("Subject") == f"{DEVICE_ID}:0340200042,{PLATFORM_ID}:0"
    final = [m for m in result.received() if (m.status or 0) >= 200 and "INVITE" in (m.header("CSeq") or "")]
    assert final[0].status == int(answer)
    assert len(unique(result.sent("ACK"))) == 1
    if answer == "200":
        assert b"y=0340200042" in final[0].body and len(unique(result.sent("BYE"))) == 1
    else:
        assert not result.sent("BYE")
    if code:
        assert f"INVITE answered {answer}, expected {expect}" in result.errors
    assert camera.successful == 1


def test_keepalive_catalog_and_invite_over_tcp(tmp_path):
    """The scenarios work over TCP too (-t t1): one connection carries requests both ways."""
    with _platform(tmp_path, transport="t1") as platform:
        with Sipp("device_keepalive.xml", remote=("127.0.0.1", platform.port), injection_csv=DEVICES[:1],
                  calls=2, transport="t1", timeout=30, work_dir=tmp_path / "ka") as ka:
            keepalives = ka.wait(45)
        platform.stop()
    assert keepalives.successful == 2
    catalog = write_catalog(tmp_path / "catalog", [f"3402000000131000{n:04d}" for n in range(1, 4)], per_page=2)
    with Sipp("device_uas.xml", variables=catalog, transport="t1", timeout=60, work_dir=tmp_path / "dev") as device:
        with Sipp("platform_uac_catalog.xml", remote=("127.0.0.1", device.port), transport="t1", timeout=30,
                  work_dir=tmp_path / "cat") as query:
            pages = unique(query.wait(45).received("MESSAGE"))
        device.stop()
    assert len(pages) == 2 and {p.transport for p in pages} == {"TCP"}
    # the camera keeps running until the platform is done: over TCP, a peer that exits closes the
    # connection, and SIPp fails a call of the other side that has not quite ended (FailedTcpClosed)
    with Sipp("camera_uas.xml", transport="t1", timeout=60, work_dir=tmp_path / "cam") as cam:
        with Sipp("platform_invite.xml", remote=("127.0.0.1", cam.port), calls=1, transport="t1", timeout=30,
                  variables={"hold_ms": 100, "media_proto": "TCP/RTP/AVP"}, work_dir=tmp_path / "inv") as inv:
            invite = inv.wait(45)
        camera = cam.stop()
    assert camera.successful == 1 and camera.failed == 0
    assert b"m=video 30000 TCP/RTP/AVP 96 98 97" in invite.sent("INVITE")[0].body
    assert invite.received("200") and invite.sent("BYE")


def test_tshark_sees_only_well_formed_sip_from_every_scenario(tmp_path):
    need_root("tshark")
    platform_port, device_port, camera_port = free_port(), free_port(), free_port()
    catalog = write_catalog(tmp_path / "catalog", [f"3402000000131000{n:04d}" for n in range(1, 4)], per_page=2)
    results = []
    with LoopbackCapture(tmp_path / "sip.pcap", [platform_port, device_port, camera_port]) as cap:
        with _platform(tmp_path, local_port=platform_port) as platform:
            for scenario, name in (("device_register.xml", "reg"), ("device_keepalive.xml", "ka"),
                                   ("device_alarm.xml", "alarm")):
                with Sipp(scenario, remote=("127.0.0.1", platform_port), injection_csv=DEVICES[:1], calls=1,
                          timeout=30, work_dir=tmp_path / name) as uac:
                    results.append(uac.wait(45))
            results.append(platform.stop())
        with Sipp("device_uas.xml", local_port=device_port, variables=catalog, timeout=60,
                  work_dir=tmp_path / "dev") as device:
            with Sipp("platform_uac_catalog.xml", remote=("127.0.0.1", device_port), timeout=30,
                      work_dir=tmp_path / "cat") as query:
                results.append(query.wait(45))
            results.append(device.stop())
        with Sipp("camera_uas.xml", local_port=camera_port, calls=1, timeout=60, work_dir=tmp_path / "cam") as cam:
            with Sipp("platform_invite.xml", remote=("127.0.0.1", camera_port), calls=1, timeout=30,
                      variables={"hold_ms": 100}, work_dir=tmp_path / "inv") as inv:
                results.append(inv.wait(45))
            results.append(cam.wait(45))
        cap.stop()
    rows = tshark_sip(cap.path, ports=[platform_port, device_port, camera_port])
    assert not [r for r in rows if r["malformed"]], [r for r in rows if r["malformed"]][:3]
    methods = {r["method"] for r in rows if r["method"]}
    assert {"REGISTER", "MESSAGE", "INVITE", "ACK", "BYE"} <= methods
    assert {401, 200, 100} <= {r["status"] for r in rows if r["status"]}
    assert any(r["content_type"] == "Application/MANSCDP+xml" for r in rows)
    assert all(r["call_id"] and r["from"] and r["to"] and r["cseq"] for r in rows)
    # every message SIPp sent (retransmissions too) was captured and dissected as SIP
    sent = [m for r in results for m in r.sent()]
    assert len(sent) >= 20
    assert len(rows) == len(sent)
    assert sorted(r["call_id"] for r in rows) == sorted(m.header("Call-ID") for m in sent)


def test_tshark_sip_flags_malformed_sip(tmp_path):
    """tshark_sip itself: it must tell well-formed SIP from what tshark finds malformed."""
    head = (b"MESSAGE sip:a@3402000000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
            b"Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nFrom: <sip:b@3402000000>;tag=1\r\nTo: <sip:a@3402000000>\r\n")
    good = head + b"Content-Type: Application/MANSCDP+xml\r\nContent-Length: 3\r\n\r\nabc"
    bad = [head + b"Content-Length: abc\r\n\r\n",                       # invalid Content-Length
           head + b"Content-Length: 0\r\n",                               # header not ended by an empty line
           head + b"no colon header\r\nContent-Length: 0\r\n\r\n",         # header without a colon
           head + b"Content-Type: application/sdp\r\nContent-Length: 9\r\n\r\nv=0\r\nm=\r\n",   # bad SDP
           b"SIP/2.0 2000 OK\r\nCall-ID: y\r\n\r\n"]                        # not SIP at all
    rows = tshark_sip(sip_datagrams_pcap(tmp_path / "t.pcap", [good, *bad], port=5062), ports=[5062])
    assert [r["malformed"] for r in rows] == [False] + [True] * len(bad)
    assert rows[0]["method"] == "MESSAGE" and rows[0]["call_id"] == "c1"
    assert rows[0]["content_type"] == "Application/MANSCDP+xml" and rows[0]["from"].startswith("<sip:b@")


# -- a hand-made SIP peer for the checks SIPp against SIPp cannot make

def _message(content_type: str, body: bytes, *, call_id: str = "handmade-1", port: int = 5999) -> bytes:
    head = (f"MESSAGE sip:{DEVICE_ID}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:{PLATFORM_ID}@{DOMAIN}>;tag=t{call_id}\r\nTo: <sip:{DEVICE_ID}@{DOMAIN}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _register(port: int, *, cseq: int, authorization: str | None = None) -> bytes:
    user = DEVICES[0][0]
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (f"REGISTER sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bKhand{cseq}\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=hand\r\nTo: <sip:{user}@{DOMAIN}>\r\nCall-ID: hand-register\r\n"
            f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n{auth}"
            f"Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


def _response_to(request: bytes, status: int, reason: str) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [h for h in head if h.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")]
    return b"SIP/2.0 %d %s\r\n" % (status, reason.encode()) + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"


