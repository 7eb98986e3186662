"""GB/T 28181 SIP messages as real devices send them (a Hikvision/Dahua-style camera, a platform).

Camera 34020000001320000001 at 192.168.1.64 registers to platform 34020000002000000001 (domain
3402000000) at 192.168.1.10:5060 with password 12345678. Bytes only: each test parses them itself.
"""
from __future__ import annotations

PASSWORD = "12345678"
CATALOG_NAME = "大门摄像机"


def crlf(text: str, body: bytes = b"") -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8") + body


REGISTER = crlf("""REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1371463273
From: <sip:34020000001320000001@3402000000>;tag=2043466181
To: <sip:34020000001320000001@3402000000>
Call-ID: 1011047669
CSeq: 1 REGISTER
Contact: <sip:34020000001320000001@192.168.1.64:5060>
Max-Forwards: 70
User-Agent: IP Camera
Expires: 3600
Content-Length: 0

""")

UNAUTHORIZED = crlf("""SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5060;branch=z9hG4bK1371463273;received=192.168.1.64
From: <sip:34020000001320000001@3402000000>;tag=2043466181
To: <sip:34020000001320000001@3402000000>;tag=1790583453
Call-ID: 1011047669
CSeq: 1 REGISTER
WWW-Authenticate: Digest realm="3402000000",nonce="9bd055e3b4e6c1b6a4c3f2e1d0c9b8a7"
User-Agent: LiveGBS v220814
Content-Length: 0

""")

# the answer to UNAUTHORIZED, no qop (what most cameras send): response computed with PASSWORD
REGISTER_AUTH = crlf("""REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1595213394
From: <sip:34020000001320000001@3402000000>;tag=2043466181
To: <sip:34020000001320000001@3402000000>
Call-ID: 1011047669
CSeq: 2 REGISTER
Contact: <sip:34020000001320000001@192.168.1.64:5060>
Authorization: Digest username="34020000001320000001", realm="3402000000", \
nonce="9bd055e3b4e6c1b6a4c3f2e1d0c9b8a7", uri="sip:34020000002000000001@3402000000", \
response="5fe0d63d0415670688636367f493c9f7", algorithm=MD5
Max-Forwards: 70
User-Agent: IP Camera
Expires: 3600
Content-Length: 0

""")

# Dahua style: qop=auth with cnonce and nc, against a challenge that offered qop="auth"
REGISTER_AUTH_QOP = crlf("""REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.65:5060;branch=z9hG4bK32f1a8d3ce
From: <sip:34020000001320000001@3402000000>;tag=b5e1a0c2
To: <sip:34020000001320000001@3402000000>
Call-ID: 4c2f6b7f0d2e4a9b@192.168.1.65
CSeq: 21 REGISTER
Contact: <sip:34020000001320000001@192.168.1.65:5060>
Authorization: Digest username="34020000001320000001",realm="3402000000",nonce="6fe9ba44a76be22a",\
uri="sip:34020000002000000001@3402000000",response="dd11f18223e227454e93f111e201535f",\
algorithm=MD5,cnonce="61d6d2b1",qop=auth,nc=00000001
Max-Forwards: 70
User-Agent: Dahua SIP UAC V2.0
Expires: 3600
Content-Length: 0

""")

REGISTER_OK = crlf("""SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5060;branch=z9hG4bK1595213394;received=192.168.1.64
From: <sip:34020000001320000001@3402000000>;tag=2043466181
To: <sip:34020000001320000001@3402000000>;tag=705735391
Call-ID: 1011047669
CSeq: 2 REGISTER
Contact: <sip:34020000001320000001@192.168.1.64:5060>
Date: 2026-12-06T11:50:03.412
Expires: 3600
Content-Length: 0

""")

KEEPALIVE_BODY = ("""<?xml version="1.0" encoding="GB2312"?>
<Notify>
<CmdType>Keepalive</CmdType>
<SN>43</SN>
<DeviceID>34020000001320000001</DeviceID>
<Status>OK</Status>
</Notify>
""").replace("\n", "\r\n").encode("gb2312")

KEEPALIVE = crlf(f"""MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1046281962
From: <sip:34020000001320000001@3402000000>;tag=1394783563
To: <sip:34020000002000000001@3402000000>
Call-ID: 1567402127
CSeq: 20 MESSAGE
Content-Type: Application/MANSCDP+xml
Max-Forwards: 70
User-Agent: IP Camera
Content-Length: {len(KEEPALIVE_BODY)}

""", KEEPALIVE_BODY)

CATALOG_BODY = (f"""<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>17430</SN>
<DeviceID>34020000001320000001</DeviceID>
<SumNum>1</SumNum>
<DeviceList Num="1">
<Item>
<DeviceID>34020000001320000001</DeviceID>
<Name>{CATALOG_NAME}</Name>
<Manufacturer>Hikvision</Manufacturer>
<Model>IP Camera</Model>
<Owner>Owner</Owner>
<CivilCode>3402000000</CivilCode>
<Address>Address</Address>
<Parental>0</Parental>
<ParentID>34020000002000000001</ParentID>
<SafetyWay>0</SafetyWay>
<RegisterWay>1</RegisterWay>
<Secrecy>0</Secrecy>
<Status>ON</Status>
</Item>
</DeviceList>
</Response>
""").replace("\n", "\r\n").encode("gb2312")

CATALOG = crlf(f"""MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK2076339154
From: <sip:34020000001320000001@3402000000>;tag=1137018227
To: <sip:34020000002000000001@3402000000>
Call-ID: 1897562251
CSeq: 20 MESSAGE
Content-Type: Application/MANSCDP+xml
Max-Forwards: 70
User-Agent: IP Camera
Content-Length: {len(CATALOG_BODY)}

""", CATALOG_BODY)

INVITE_SDP = crlf("""v=0
o=34020000002000000001 0 0 IN IP4 192.168.1.10
s=Play
u=34020000001320000001:0
c=IN IP4 192.168.1.10
t=0 0
m=video 30000 RTP/AVP 96 98 97
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:98 H264/90000
a=rtpmap:97 MPEG4/90000
y=0200000001
f=
""")

INVITE = crlf(f"""INVITE sip:34020000001320000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK639118762
From: <sip:34020000002000000001@3402000000>;tag=158918761
To: <sip:34020000001320000001@3402000000>
Call-ID: 639118762@192.168.1.10
CSeq: 1 INVITE
Contact: <sip:34020000002000000001@192.168.1.10:5060>
Content-Type: APPLICATION/SDP
Max-Forwards: 70
Subject: 34020000001320000001:0200000001,34020000002000000001:0
User-Agent: LiveGBS v220814
Content-Length: {len(INVITE_SDP)}

""", INVITE_SDP)

OK_SDP = crlf("""v=0
o=34020000001320000001 0 0 IN IP4 192.168.1.64
s=Play
c=IN IP4 192.168.1.64
t=0 0
m=video 15060 RTP/AVP 96
a=sendonly
a=rtpmap:96 PS/90000
a=filesize:0
y=0200000001
f=v/2/4///a///
""")

INVITE_OK = crlf(f"""SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.168.1.10:5060;rport=5060;branch=z9hG4bK639118762;received=192.168.1.10
From: <sip:34020000002000000001@3402000000>;tag=158918761
To: <sip:34020000001320000001@3402000000>;tag=1402547358
Call-ID: 639118762@192.168.1.10
CSeq: 1 INVITE
Contact: <sip:34020000001320000001@192.168.1.64:5060>
Content-Type: application/sdp
User-Agent: IP Camera
Content-Length: {len(OK_SDP)}

""", OK_SDP)

ACK = crlf("""ACK sip:34020000001320000001@192.168.1.64:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK639118763
From: <sip:34020000002000000001@3402000000>;tag=158918761
To: <sip:34020000001320000001@3402000000>;tag=1402547358
Call-ID: 639118762@192.168.1.10
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

""")

BYE = crlf("""BYE sip:34020000001320000001@192.168.1.64:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK639118764
From: <sip:34020000002000000001@3402000000>;tag=158918761
To: <sip:34020000001320000001@3402000000>;tag=1402547358
Call-ID: 639118762@192.168.1.10
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

""")

# TCP media (GB/T 28181-2016 §F): the platform is passive, the camera connects
TCP_SDP = crlf("""v=0
o=34020000002000000001 0 0 IN IP4 192.168.1.10
s=Play
u=34020000001320000001:0
c=IN IP4 192.168.1.10
t=0 0
m=video 30002 TCP/RTP/AVP 96
a=recvonly
a=rtpmap:96 PS/90000
a=setup:passive
a=connection:new
y=0200000002
""")

PLAYBACK_SDP = crlf("""v=0
o=34020000002000000001 0 0 IN IP4 192.168.1.10
s=Playback
u=34020000001320000001:0
c=IN IP4 192.168.1.10
t=1765008000 1765011600
m=video 30004 RTP/AVP 96
a=recvonly
a=rtpmap:96 PS/90000
y=1340200003
""")

# compact header names (RFC 3261 §7.3.3) from a small device
COMPACT = crlf("""MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
v: SIP/2.0/TCP 192.168.1.66:5060;branch=z9hG4bK776asdhds
f: <sip:34020000001320000003@3402000000>;tag=1928301774
t: <sip:34020000002000000001@3402000000>
i: a84b4c76e66710@192.168.1.66
CSeq: 314159 MESSAGE
c: Application/MANSCDP+xml
l: 0

""")

ALL = {"REGISTER": REGISTER, "UNAUTHORIZED": UNAUTHORIZED, "REGISTER_AUTH": REGISTER_AUTH,
       "REGISTER_AUTH_QOP": REGISTER_AUTH_QOP, "REGISTER_OK": REGISTER_OK, "KEEPALIVE": KEEPALIVE,
       "CATALOG": CATALOG, "INVITE": INVITE, "INVITE_OK": INVITE_OK, "ACK": ACK, "BYE": BYE, "COMPACT": COMPACT}
