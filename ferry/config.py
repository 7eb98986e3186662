"""Agent configuration files (TOML), validated strictly.

A mistyped key or a value of the wrong type is an error naming the file and
the key; relative paths are resolved against the config file's folder.
"""
from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ferry import limits
from ferry.lanes.signaling.ids import IdMap


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_host(value: str) -> str:
    ipaddress.ip_address(value)
    return value


class AgentSection(_Strict):
    name: str = Field(min_length=1, max_length=64)
    key: str                      # this agent's SM2 private key (PKCS#8 PEM)
    peer_public: str              # the other agent's SM2 public key (SPKI PEM)
    policy: str                   # policy directory
    audit_dir: str
    state_dir: str = ""           # what the agent keeps across restarts (default: <audit_dir>-state)
    # seconds until records are signed, busy or idle (a timer signs a quiet agent's tail); at most the default
    checkpoint_interval: float = Field(default=limits.AUDIT_CHECKPOINT_INTERVAL, ge=1.0,
                                       le=limits.AUDIT_CHECKPOINT_INTERVAL)


class OuterLink(_Strict):
    peer_host: str                # the inner agent's address on the link
    peer_port: int = Field(ge=1, le=65535)
    bind_host: str = "0.0.0.0"
    interface: str = ""           # bind the socket to this device (SO_BINDTODEVICE) if set
    rate_mbps: float = Field(default=200.0, gt=0, le=100_000)
    datagram_max: int = Field(default=limits.DATAGRAM_MAX, ge=256, le=65000)
    fec_k: int = Field(default=limits.FEC_K, ge=1, le=limits.FEC_K_MAX)
    fec_m: int = Field(default=limits.FEC_M, ge=1, le=limits.FEC_M_MAX)
    gso: Literal["auto", "off"] = "auto"
    sndbuf: int = Field(default=8 << 20, ge=1 << 16)
    # seconds until the session key rotates (a new epoch), at most limits.KEY_LIFETIME
    key_lifetime: float = Field(default=limits.KEY_LIFETIME, ge=limits.KEY_LIFETIME_MIN, le=limits.KEY_LIFETIME)

    _host = field_validator("peer_host", "bind_host")(_check_host)


class InnerLink(_Strict):
    listen_host: str
    listen_port: int = Field(ge=1, le=65535)
    interface: str = ""
    gro: Literal["auto", "off"] = "auto"
    rcvbuf: int = Field(default=64 << 20, ge=1 << 16)

    _host = field_validator("listen_host")(_check_host)


class OuterFiles(_Strict):
    spool: str                    # watched folder; whole files only
    refused_dir: str = ""         # refused files are moved here (default: <spool>.refused)
    source: str = "outer-spool"   # policy source name of this spool
    destination: str = "inner-spool"
    settle: float = Field(default=limits.SPOOL_SETTLE, ge=0, le=3600)
    scan_interval: float = Field(default=limits.SPOOL_SCAN_INTERVAL, gt=0, le=60)
    # seconds a sent file is kept (in <spool>.sent) after its last datagram left, for re-sending
    keep_after_sent: float = Field(default=limits.KEEP_AFTER_SENT, ge=0, le=limits.KEEP_AFTER_SENT_MAX)


class InnerFiles(_Strict):
    spool: str                    # delivered files appear here


class ManagementSection(_Strict):
    socket: str = ""              # Unix socket of the gRPC management service; none if empty
    policy_signers: list[str] = Field(default_factory=list, max_length=64)   # SM2 public keys (SPKI PEM)
    # the same service on TCP, "host:port", with mutual TLS only: all three files are required
    listen: str = ""
    tls_cert: str = ""            # this agent's server certificate chain (PEM)
    tls_key: str = ""             # its private key (PEM)
    tls_client_ca: str = ""       # the CA whose client certificates may connect (PEM)
    metrics: str = ""             # "host:port" of the Prometheus metrics HTTP listener; none if empty

    _listen = field_validator("listen")(lambda v: _host_port(v) if v else v)
    _metrics = field_validator("metrics")(lambda v: _host_port(v) if v else v)

    @model_validator(mode="after")
    def _tls_for_tcp(self) -> "ManagementSection":
        missing = [k for k in ("tls_cert", "tls_key", "tls_client_ca") if not getattr(self, k)]
        if self.listen and missing:
            raise ValueError(f"listen needs mutual TLS: set {', '.join(missing)} (TCP without TLS is refused)")
        if not self.listen and len(missing) < 3:
            raise ValueError("tls_cert, tls_key and tls_client_ca are used only with listen = \"host:port\"")
        return self


class KernelSection(_Strict):
    """nftables rules compiled from the running policy, applied at start and on every reload."""
    apply: bool = False
    link_if: str = Field(min_length=1, max_length=15)   # the ferry link interface
    ingest_if: str = ""           # outer: the interface facing cameras and platforms (default: any but link, lo)
    peer_addr: str = ""           # inner: the outer agent's link address (outer: taken from [link] peer_host)
    reverse_peer: str = ""        # outer: the inner host's address of the reverse ferry (default [link] peer_host)

    _host = field_validator("peer_addr", "reverse_peer")(lambda v: _check_host(v) if v else v)


def _host_port(value: str) -> str:
    """'host:port' ('[v6]:port' for IPv6) with a literal address."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    _check_host(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    return value


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host[1:-1] if host.startswith("[") else host), int(port)


class OuterVideo(_Strict):
    """One GB/T 28181 / RTP ingest stream (`[[video]]`)."""
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    transport: Literal["udp", "tcp-listen", "tcp-connect"] = "udp"
    listen: str = ""              # udp, tcp-listen: "host:port" ferry receives on
    connect: str = ""             # tcp-connect: "host:port" of the camera or platform
    device_id: str = Field(pattern=r"^[0-9]{20}$")
    ssrc: int = Field(default=0, ge=0, le=0xFFFFFFFF)   # 0: learn the first SSRC
    source_address: str = ""      # accept packets / connections from this address only
    payload: Literal["ps", "h264", "h265"] = "ps"
    destination: str = Field(min_length=1, max_length=64)

    _addr = field_validator("listen", "connect")(lambda v: _host_port(v) if v else v)
    _src = field_validator("source_address")(lambda v: _check_host(v) if v else v)

    @model_validator(mode="after")
    def _endpoint(self):
        if self.transport == "tcp-connect" and not self.connect:
            raise ValueError("transport tcp-connect needs connect = \"host:port\"")
        if self.transport != "tcp-connect" and not self.listen:
            raise ValueError(f"transport {self.transport} needs listen = \"host:port\"")
        return self


# --- [media] of the outer agent: video of outer cameras over SIP (issue 13 "media-outer") ---
def _contact(value: str) -> str:
    """'udp:host:port' or 'tcp:host:port' (a camera's SIP address when it does not register)."""
    transport, sep, rest = value.partition(":")
    if not sep or transport not in ("udp", "tcp"):
        raise ValueError(f"expected udp:host:port or tcp:host:port, got {value!r}")
    _host_port(rest)
    return value


class OuterMediaCamera(_Strict):
    """One camera ferry INVITEs (`[[media.camera]]`): always-on, or one without registration."""
    device_id: str = Field(pattern=r"^[0-9]{20}$")
    contact: str = ""             # "udp:host:port" / "tcp:host:port"; "" = the contact it registered
    # media: RTP over UDP, TCP the camera connects to ferry ("tcp"), or TCP ferry connects to it ("tcp-active")
    transport: Literal["udp", "tcp", "tcp-active"] = "udp"

    _contact = field_validator("contact")(lambda v: _contact(v) if v else v)


class OuterMedia(_Strict):
    """`[media]`: ferry as the upper platform INVITEs outer cameras; their video crosses in the
    video lane (stream names sip-<device_id>-<n>)."""
    mode: Literal["on-demand", "always-on"] = "on-demand"
    media_address: str            # the address ferry puts in c= (where cameras send RTP)
    port_range: list[int] = Field(default_factory=lambda: [30000, 30999], min_length=2, max_length=2)
    destination: str = Field(min_length=1, max_length=64)   # policy destination of the streams
    sip_listen: str = ""          # UDP "host:port" of ferry's own SIP socket, only without [signaling]
    server_id: str = Field(default="", pattern=r"^([0-9]{20})?$")   # "" = [signaling] server_id
    domain: str = Field(default="", pattern=r"^([0-9]{10})?$")      # "" = [signaling] realm
    invite_timeout: float = Field(default=limits.MEDIA_INVITE_TIMEOUT, gt=0, le=120)
    media_timeout: float = Field(default=limits.MEDIA_TIMEOUT, gt=0, le=120)
    retry_max: float = Field(default=limits.MEDIA_RETRY_MAX, ge=limits.MEDIA_RETRY_MIN, le=3600)
    camera: list[OuterMediaCamera] = Field(default_factory=list, max_length=limits.MEDIA_DEVICES_MAX)

    _addr = field_validator("media_address")(_check_host)
    _listen = field_validator("sip_listen")(lambda v: _host_port(v) if v else v)

    @model_validator(mode="after")
    def _consistent(self):
        lo, hi = self.port_range
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"port_range must be [low, high] within 1-65535, got {self.port_range}")
        ids = [c.device_id for c in self.camera]
        if len(set(ids)) != len(ids):
            raise ValueError("media.camera device_ids must be unique")
        if self.mode == "always-on" and not self.camera:
            raise ValueError("mode always-on needs at least one [[media.camera]]")
        return self


class InnerVideoOutput(_Strict):
    """Where the inner agent sends the streams of one policy destination (`[[video_output]]`)."""
    destination: str = Field(min_length=1, max_length=64)
    form: Literal["ps", "h264", "h265"] = "ps"
    transport: Literal["udp", "tcp", "file"] = "udp"
    address: str = ""             # udp, tcp: "host:port" of the receiver
    path: str = ""                # file: appended to; "{stream}" is replaced by the stream id
    payload_type: int = Field(default=96, ge=0, le=127)
    gso: Literal["auto", "off"] = "auto"   # udp: one segmentation-offload send per access unit

    _addr = field_validator("address")(lambda v: _host_port(v) if v else v)

    @model_validator(mode="after")
    def _endpoint(self):
        if self.transport == "file" and not self.path:
            raise ValueError("transport file needs path")
        if self.transport != "file" and not self.address:
            raise ValueError(f"transport {self.transport} needs address = \"host:port\"")
        return self


class InnerMedia(_Strict):
    """`[media]` on the inner agent (issue 13 item 3, media-inner): ferry answers the inner GB/T 28181
    platform's INVITEs of outer cameras and sends their crossing video to the address and SSRC asked."""
    mode: Literal["on-demand", "always-on"] = "always-on"
    # SIP "host:port" (UDP and TCP) ferry takes INVITEs on when there is no [signaling] section
    # (with [signaling], its endpoint carries them and this stays empty)
    listen: str = ""
    media_address: str            # IPv4 address ferry sends media from and names in its SDP answers
    port_min: int = Field(default=30000, ge=1024, le=65534)   # local media ports: UDP send, TCP passive listen
    port_max: int = Field(default=30999, ge=1025, le=65535)
    invite_timeout: float = Field(default=limits.INNER_MEDIA_INVITE_TIMEOUT, ge=1.0,
                                  le=limits.INNER_MEDIA_INVITE_TIMEOUT_MAX)
    max_viewers: int = Field(default=limits.INNER_MEDIA_MAX_VIEWERS, ge=1, le=limits.VIDEO_VIEWERS_MAX)
    max_viewers_per_device: int = Field(default=limits.INNER_MEDIA_MAX_VIEWERS_PER_DEVICE, ge=1,
                                        le=limits.VIDEO_VIEWERS_MAX)
    linger: float = Field(default=limits.INNER_MEDIA_LINGER, ge=0, le=300)   # on-demand: before stop_stream
    # addresses of the platform(s) whose INVITEs are taken (with [signaling], its platform's is added);
    # empty without [signaling]: any address that reaches `listen`
    allow_from: list[str] = Field(default_factory=list, max_length=64)

    _listen = field_validator("listen")(lambda v: _host_port(v) if v else v)
    _allow = field_validator("allow_from")(lambda v: [_check_host(x) for x in v])

    @field_validator("media_address")
    @classmethod
    def _ipv4(cls, v: str) -> str:
        try:
            ipaddress.IPv4Address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address (GB/T 28181 SDP: c=IN IP4)") from None
        return v

    @model_validator(mode="after")
    def _ports(self) -> "InnerMedia":
        if self.port_max < self.port_min + 1:
            raise ValueError(f"port_max {self.port_max} must be above port_min {self.port_min} (RTP takes even ports)")
        return self


class InnerSignalingIdMap(_Strict):
    """[signaling.id_map]: outer device ID -> the ID the inner platform sees (ferry/lanes/signaling/ids.py).
    ``table``: per device; ``prefix``: {"outer leading digits" = "inner leading digits"} (same length)."""
    table: dict[str, str] = Field(default_factory=dict, max_length=limits.SIG_ID_MAP_MAX)
    prefix: dict[str, str] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _bijective(self):
        IdMap(self.table, self.prefix.items())      # IdMapError (a ValueError) names the entry
        return self


class InnerSignaling(_Strict):
    """[signaling] on the inner agent: ferry as a lower-level platform of the inner GB/T 28181
    platform (cascade registration, keepalive, catalog; README, Signaling: inner side)."""
    local: str                    # "host:port" ferry's SIP endpoint binds
    transport: Literal["udp", "tcp"] = "udp"
    platform: str                 # "host:port" of the inner platform's SIP server
    platform_id: str = Field(pattern=r"^[0-9]{20}$")
    platform_domain: str = Field(default="", pattern=r"^[0-9A-Za-z.:-]{0,64}$")   # default: platform_id[:10]
    local_id: str = Field(pattern=r"^[0-9]{20}$")          # ferry's ID as a lower-level platform
    local_domain: str = Field(default="", pattern=r"^[0-9A-Za-z.:-]{0,64}$")      # default: local_id[:10]
    password: str = Field(default="", max_length=128)
    password_file: str = ""       # one line; mode 0600 (or stricter), owned by the agent's user
    register_expires: int = Field(default=3600, ge=limits.SIG_REGISTER_EXPIRES_MIN, le=86400)
    keepalive_interval: float = Field(default=60.0, ge=limits.SIG_KEEPALIVE_MIN, le=3600)
    catalog_page_size: int = Field(default=limits.SIG_CATALOG_PAGE, ge=1, le=limits.SIG_CATALOG_PAGE_MAX)
    id_map: InnerSignalingIdMap = InnerSignalingIdMap()

    _addr = field_validator("local", "platform")(lambda v: _host_port(v))

    @model_validator(mode="after")
    def _one_password(self):
        if bool(self.password) == bool(self.password_file):
            raise ValueError("set exactly one of password and password_file")
        return self


class AuditForwardSection(_Strict):
    """[audit.forward]: the trail forwarded as RFC 5424 syslog over TCP (TLS with tls_ca) to a log
    server, at least once, from a persisted cursor (README, Audit: forwarding)."""
    address: str = Field(min_length=3, max_length=300)      # "host:port" of the log server
    tls_ca: str = ""              # CA file (PEM): TLS to the server, verified against it and its name
    tls_cert: str = ""            # client certificate (PEM) for a server that asks for one
    tls_key: str = ""             # its private key (PEM)
    server_name: str = ""         # the name the server's certificate must carry (default: the host)
    cursor: str = ""              # default: <state_dir>/forward.cursor
    hostname: str = Field(default="", max_length=255)   # RFC 5424 HOSTNAME (default: this host's name)

    @field_validator("address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError('expected "host:port", e.g. "logs.example.net:6514" or "[::1]:514"')
        return v

    @model_validator(mode="after")
    def _tls_pair(self):
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_cert and not self.tls_ca:
            raise ValueError("tls_cert needs tls_ca (a client certificate is only sent over TLS)")
        return self


class AuditSection(_Strict):
    """Inner: link refusal records written per (event, code) per hour; the rest are counted (README, Audit).
    Both agents: [audit.forward]."""
    refusals_per_reason_per_hour: int = Field(default=limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR, ge=0,
                                              le=limits.AUDIT_REFUSALS_PER_REASON_PER_HOUR_MAX)
    forward: AuditForwardSection | None = None


class OuterAuditSection(_Strict):
    """Outer: [audit.forward] only."""
    forward: AuditForwardSection | None = None


# --- [signaling] of the outer agent: ferry as the SIP server of outer devices (issue 13 "sig-outer") ---
class OuterSignalingDevice(_Strict):
    """One outer device or lower platform that may register (`[[signaling.device]]`)."""
    id: str = Field(pattern=r"^[0-9]{20}$")
    password: str = Field(default="", max_length=128)       # its SIP digest password, or...
    password_file: str = ""       # ...a file holding it (first line; mode 0600 checked at start)

    @model_validator(mode="after")
    def _one_password(self):
        if bool(self.password) == bool(self.password_file):
            raise ValueError(f"device {self.id}: give password or password_file (one of them)")
        return self


class OuterSignaling(_Strict):
    """`[signaling]`: GB/T 28181 SIP towards outer devices (REGISTER, MESSAGE with MANSCDP)."""
    listen_udp: str = ""          # "host:port" for SIP over UDP
    listen_tcp: str = ""          # "host:port" for SIP over TCP
    server_id: str = Field(pattern=r"^[0-9]{20}$")          # ferry's SIP server ID towards devices
    realm: str = Field(pattern=r"^[0-9]{10}$")              # SIP domain / digest realm (10 digits)
    source: str = Field(default="", max_length=64)          # policy source name ("" = by device ID)
    destination: str = Field(min_length=1, max_length=64)   # policy destination of signaling objects
    keepalive_interval: float = Field(default=limits.SIGNALING_KEEPALIVE_INTERVAL, ge=1.0, le=3600.0)
    keepalive_timeout: float = Field(default=0.0, ge=0.0, le=86_400.0)   # 0: keepalive_missed x interval
    register_expires_min: int = Field(default=limits.SIGNALING_REGISTER_EXPIRES_MIN, ge=1, le=86_400)
    register_expires_max: int = Field(default=3600, ge=1, le=limits.SIGNALING_REGISTER_EXPIRES_MAX)
    catalog_query: bool = True    # ask each device for its catalog when it registers...
    catalog_retry: float = Field(default=limits.SIGNALING_CATALOG_RETRY, ge=0.0, le=3600.0)  # ...again after (0: no)
    device: list[OuterSignalingDevice] = Field(default_factory=list, max_length=limits.SIGNALING_DEVICES_MAX)

    _addr = field_validator("listen_udp", "listen_tcp")(lambda v: _host_port(v) if v else v)

    @model_validator(mode="after")
    def _consistent(self):
        if not self.listen_udp and not self.listen_tcp:
            raise ValueError("signaling needs listen_udp or listen_tcp (or both)")
        if self.register_expires_min > self.register_expires_max:
            raise ValueError("register_expires_min is above register_expires_max")
        ids = [d.id for d in self.device]
        if len(set(ids)) != len(ids):
            raise ValueError("signaling.device ids must be unique")
        return self


class InnerReverse(_Strict):
    """Inner [reverse]: the sender of the reverse ferry (issue 13), with keys of its own."""
    peer_host: str                # the outer agent's reverse listener
    peer_port: int = Field(ge=1, le=65535)
    bind_host: str = "0.0.0.0"
    interface: str = ""           # bind the socket to this device (SO_BINDTODEVICE) if set
    key: str                      # the inner agent's reverse signing key (SM2 private, PKCS#8 PEM)
    peer_public: str              # the outer agent's reverse public key (SPKI PEM)
    rate_mbps: float = Field(default=limits.REVERSE_RATE_MBPS, gt=0, le=1000)
    destination: str = Field(default="outer-platform", min_length=1, max_length=64)   # policy destination
    fec_k: int = Field(default=4, ge=1, le=limits.FEC_K_MAX)
    fec_m: int = Field(default=2, ge=1, le=limits.FEC_M_MAX)
    key_lifetime: float = Field(default=limits.KEY_LIFETIME, ge=limits.KEY_LIFETIME_MIN, le=limits.KEY_LIFETIME)

    _host = field_validator("peer_host", "bind_host")(_check_host)


class OuterReverse(_Strict):
    """Outer [reverse]: the receiver of the reverse ferry (issue 13), with keys of its own."""
    listen_host: str
    listen_port: int = Field(ge=1, le=65535)
    interface: str = ""
    key: str                      # the outer agent's reverse key (SM2 private: opens the envelopes)
    peer_public: str              # the inner agent's reverse signing public key
    rcvbuf: int = Field(default=4 << 20, ge=1 << 16)

    _host = field_validator("listen_host")(_check_host)


class OuterConfig(_Strict):
    agent: AgentSection
    link: OuterLink
    files: OuterFiles | None = None
    management: ManagementSection | None = None
    kernel: KernelSection | None = None
    audit: OuterAuditSection = OuterAuditSection()
    video: list[OuterVideo] = Field(default_factory=list, max_length=limits.VIDEO_STREAMS_MAX)
    signaling: OuterSignaling | None = None     # issue 13 "sig-outer"
    reverse: OuterReverse | None = None
    media: OuterMedia | None = None             # issue 13 "media-outer"

    @model_validator(mode="after")
    def _video_names_unique(self):
        names = [v.name for v in self.video]
        if len(set(names)) != len(names):
            raise ValueError("video stream names must be unique")
        return self

    @model_validator(mode="after")
    def _media_has_sip(self):      # issue 13 "media-outer": [media] needs a SIP socket and identity
        m = self.media
        if m is not None and self.signaling is None:
            missing = [k for k in ("sip_listen", "server_id", "domain") if not getattr(m, k)]
            if missing:
                raise ValueError(f"media without [signaling] needs {', '.join(missing)}")
        return self


class InnerConfig(_Strict):
    agent: AgentSection
    link: InnerLink
    files: InnerFiles | None = None
    management: ManagementSection | None = None
    kernel: KernelSection | None = None
    audit: AuditSection = AuditSection()
    video_output: list[InnerVideoOutput] = Field(default_factory=list, max_length=limits.VIDEO_STREAMS_MAX)
    media: InnerMedia | None = None   # media-inner (issue 13 item 3)
    reverse: InnerReverse | None = None
    signaling: InnerSignaling | None = None

    @model_validator(mode="after")
    def _media_endpoint(self):       # media-inner: INVITEs come on [signaling]'s endpoint, or [media] listen
        if self.media is not None and self.signaling is not None and self.media.listen:
            raise ValueError("media.listen: with [signaling] the platform's INVITEs come on signaling.local; "
                             "remove [media] listen")
        if self.media is not None and self.signaling is None and not self.media.listen:
            raise ValueError("media.listen: without [signaling], set listen = \"host:port\" for the platform's "
                             "INVITEs")
        if self.media is not None and self.media.mode == "on-demand" and self.reverse is None:
            raise ValueError("media.mode: on-demand asks the outer agent through the reverse lane: add [reverse], "
                             "or use mode = \"always-on\"")
        return self

    @model_validator(mode="after")
    def _inner_kernel_needs_peer(self):
        if self.kernel is not None and self.kernel.apply and not self.kernel.peer_addr:
            raise ValueError("kernel.peer_addr (the outer agent's link address) is required with kernel.apply")
        return self


def _resolve(base: Path, value: str) -> str:
    if not value:
        return value
    p = Path(value)
    return str(p if p.is_absolute() else (base / p).resolve())


def load_config(path: Path, kind: type[OuterConfig] | type[InnerConfig]) -> OuterConfig | InnerConfig:
    """Read and validate a TOML agent config; paths come back absolute."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        cfg: OuterConfig | InnerConfig = kind.model_validate(raw)
    except ValidationError as e:
        msgs = [f"{path}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise ConfigError("\n".join(msgs)) from None
    base = path.resolve().parent
    agent = cfg.agent.model_copy(update={k: _resolve(base, getattr(cfg.agent, k))
                                         for k in ("key", "peer_public", "policy", "audit_dir", "state_dir")})
    if not agent.state_dir:
        agent = agent.model_copy(update={"state_dir": agent.audit_dir.rstrip("/") + "-state"})
    update: dict = {"agent": agent}
    if cfg.files is not None:
        fields = {"spool": _resolve(base, cfg.files.spool)}
        if isinstance(cfg.files, OuterFiles):
            fields["refused_dir"] = _resolve(base, cfg.files.refused_dir) or fields["spool"].rstrip("/") + ".refused"
        update["files"] = cfg.files.model_copy(update=fields)
    if cfg.management is not None:
        m = cfg.management
        update["management"] = m.model_copy(update={
            "socket": _resolve(base, m.socket),
            "policy_signers": [_resolve(base, x) for x in m.policy_signers],
            **{k: _resolve(base, getattr(m, k)) for k in ("tls_cert", "tls_key", "tls_client_ca")}})
    fwd = cfg.audit.forward
    if fwd is not None:
        update["audit"] = cfg.audit.model_copy(update={"forward": fwd.model_copy(update={
            k: _resolve(base, getattr(fwd, k)) for k in ("tls_ca", "tls_cert", "tls_key", "cursor")})})
    sig = getattr(cfg, "signaling", None)
    if isinstance(sig, OuterSignaling) and sig.device:    # issue 13 "sig-outer": password files
        update["signaling"] = sig.model_copy(update={"device": [
            d.model_copy(update={"password_file": _resolve(base, d.password_file)}) for d in sig.device]})
    if cfg.reverse is not None:
        update["reverse"] = cfg.reverse.model_copy(update={k: _resolve(base, getattr(cfg.reverse, k))
                                                           for k in ("key", "peer_public")})
    outputs = getattr(cfg, "video_output", None)
    if outputs:
        update["video_output"] = [o.model_copy(update={"path": _resolve(base, o.path)}) for o in outputs]
    sig = getattr(cfg, "signaling", None)
    if isinstance(sig, InnerSignaling) and sig.password_file:
        update["signaling"] = sig.model_copy(update={"password_file": _resolve(base, sig.password_file)})
    return cfg.model_copy(update=update)


def _mode(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None       # missing or unreadable: the loader that opens it names the problem


def mode_problems(agent: AgentSection, management: ManagementSection | None = None,
                  stored_bundle: Path | None = None) -> list[str]:
    """What a start must refuse about who may read or change the agent's keys and policy: a
    private key other users may read or change; a public key, signer key, policy folder (or a
    file in it), state directory or stored bundle any user may change; a key in a folder any user
    may change (unless sticky, like /tmp). One sentence per problem, naming the file, the key of
    the config and the fix."""
    problems: list[str] = []

    def world_writable(path: Path, what: str, fix: str, sticky_ok: bool = False) -> None:
        st = _mode(path)
        if st is None or not st.st_mode & stat.S_IWOTH or (sticky_ok and st.st_mode & stat.S_ISVTX):
            return
        problems.append(f"{path} ({what}): mode {stat.S_IMODE(st.st_mode):04o} lets any user change it; "
                        f"fix: {fix} {path}")

    key = Path(agent.key)
    st = _mode(key)
    if st is not None and st.st_mode & 0o077:
        problems.append(f"{key} ([agent] key): mode {stat.S_IMODE(st.st_mode):04o} lets other users read or "
                        f"change the private key; fix: chmod 600 {key}")
    world_writable(key.parent, "the folder of [agent] key", "chmod o-w", sticky_ok=True)
    keys = [(Path(agent.peer_public), "[agent] peer_public")]
    keys += [(Path(p), "[management] policy_signers") for p in (management.policy_signers if management else ())]
    for path, what in keys:
        world_writable(path, what, "chmod 644")
        world_writable(path.parent, f"the folder of {what}", "chmod o-w", sticky_ok=True)
    folder = Path(agent.policy)
    world_writable(folder, "[agent] policy", "chmod o-w")
    for sub in (folder, folder / "tests"):
        try:
            entries = sorted(sub.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix in (".yaml", ".yml") or entry == folder / "tests":
                world_writable(entry, "in [agent] policy", "chmod o-w")
    if agent.state_dir:
        world_writable(Path(agent.state_dir), "[agent] state_dir", "chmod 700")
    if stored_bundle is not None:
        world_writable(stored_bundle, "the applied policy bundle in [agent] state_dir", "chmod 600")
    return problems


def check_modes(agent: AgentSection, management: ManagementSection | None = None,
                stored_bundle: Path | None = None) -> None:
    """``mode_problems``, raised as one ConfigError (the agent does not start; exit 2)."""
    problems = mode_problems(agent, management, stored_bundle)
    if problems:
        raise ConfigError("refusing to start: " + "\n".join(problems))
