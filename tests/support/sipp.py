"""SIPp (Debian `sip-tester`) as a real SIP peer in tests: GB/T 28181 devices and platforms.

    with Sipp("device_register.xml", remote=("127.0.0.1", port), injection_csv=[(device_id, "pw")],
              variables={"mode": "unregister"}) as uac:
        result = uac.wait(30)                 # AssertionError with SIPp's logs unless exit code 0
        assert result.successful == 1
        assert result.received("200")         # the messages SIPp received, parsed

A scenario is a file in tests/support/sipp/ (see its README.md) or any path. SIPp runs in the
foreground (no -bg) in its own temp dir with -trace_msg, -trace_err and -trace_stat, a global
-timeout with -timeout_error, -m calls, -r rate, -key variables ([name] in the scenario), -set
global variables and -inf an injection CSV (one device a line). The context manager always stops
SIPp: SIGUSR1 (no new calls, finish the open ones), again (abort them), then SIGKILL.

Exit codes (sipp -h): 0 every call succeeded, 1 at least one failed (also a scenario that does not
load, e.g. a [key] not given: then there are no stats), 97 exit on internal command
(or the -timeout passed without -timeout_error and no call succeeded), 99 normal exit without
calls, 255 (-1) fatal error, which includes -timeout_error firing, 254 (-2) a socket could not be
bound.
"""
from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "sipp"
SIPP = "sipp"

EXIT_MEANING = {
    0: "all calls succeeded",
    1: "at least one call failed (or the scenario did not load: no stats, see errors)",
    97: "exit on internal command, or -timeout without a successful call",
    99: "normal exit without calls processed",
    255: "fatal error (-1), e.g. -timeout_error reached or a bad scenario",
    254: "fatal error binding a socket (-2)",
}

DOMAIN = "3402000000"
PLATFORM_ID = "34020000002000000001"   # the upper platform's (SIP server's) ID
DEVICE_ID = "34020000001320000001"     # a camera

# Keys every built-in scenario needs (a [key] SIPp does not know is a fatal error), and the
# options it needs; a test overrides any of them with variables= / extra_args=.
DEFAULTS: dict[str, dict[str, str]] = {
    "device_register.xml": {"server_id": PLATFORM_ID, "domain": DOMAIN, "expires": "3600", "mode": "register",
                            "hold_ms": "500"},
    "device_keepalive.xml": {"server_id": PLATFORM_ID, "domain": DOMAIN, "sn_base": "0"},
    "device_alarm.xml": {"server_id": PLATFORM_ID, "domain": DOMAIN, "sn_base": "0", "alarm_priority": "1",
                         "alarm_method": "5", "alarm_time": "2024-05-01T12:00:00"},
    "device_uas.xml": {"domain": DOMAIN, "channels": "1"},
    "platform_uas.xml": {"domain": DOMAIN},
    "platform_uac_catalog.xml": {"platform_id": PLATFORM_ID, "domain": DOMAIN, "target_id": DEVICE_ID, "sn": "1",
                                 "wait_ms": "10000", "settle_ms": "500"},
    "platform_invite.xml": {"platform_id": PLATFORM_ID, "domain": DOMAIN, "device_id": DEVICE_ID,
                            "rtp_ip": "127.0.0.1", "rtp_port": "30000", "ssrc": "0340200001", "hold_ms": "1000",
                            "expect": "200", "media_proto": "RTP/AVP"},
    "camera_uas.xml": {"domain": DOMAIN, "device_id": DEVICE_ID, "answer": "200", "rtp_port": "30002"},
}


def _options(name: str, keys: Mapping[str, str]) -> list[str]:
    if name == "device_register.xml":     # the digest uri is the Request-URI, not SIPp's default ip:port
        return ["-auth_uri", f"{keys['server_id']}@{keys['domain']}"]
    if name in ("platform_uas.xml", "device_uas.xml"):
        # a REGISTER refresh reuses its Call-ID: no dead-call memory swallowing it
        return ["-deadcall_wait", "0"]
    if name == "platform_uac_catalog.xml":
        # the Catalog pages come with fresh Call-IDs (SIPp's device_uas marks them x///id)
        return ["-oocsf", str(SCENARIOS / "platform_catalog_ooc.xml"), "-callid_slash_ign"]
    return []


def free_port(transport: str = "u1", host: str = "127.0.0.1") -> int:
    """A port free for UDP and TCP on host (SIPp binds both for some transports)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("no free UDP+TCP port on " + host)


def write_catalog(directory: Path, items: Sequence[str | Mapping[str, str]], per_page: int = 2) -> dict[str, str]:
    """Write device_uas.xml's Catalog pages (page1.xml, ...: `<DeviceList Num="n">` with the items)
    into directory; return the keys to pass as variables (catalog_dir, catalog_pages, sum_num).
    An item is a device ID, or a mapping of element name to text (DeviceID first), e.g. a Name in
    Chinese: the files are GB2312 like the MESSAGE body they go into."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [{"DeviceID": i, "Name": f"Camera {n + 1}", "Manufacturer": "SIPp", "Model": "IPC", "Owner": "Owner",
             "CivilCode": i[:6], "Address": "Address", "Parental": "0", "ParentID": i[:10] + "2000000001",
             "SafetyWay": "0", "RegisterWay": "1", "Secrecy": "0", "Status": "ON"} if isinstance(i, str) else dict(i)
            for n, i in enumerate(items)]
    pages = [rows[k:k + per_page] for k in range(0, len(rows), per_page)] or [[]]
    for n, page in enumerate(pages, 1):
        out = io.StringIO()
        out.write(f'<DeviceList Num="{len(page)}">\n')
        for row in page:
            out.write("<Item>\n" + "".join(f"<{k}>{v}</{k}>\n" for k, v in row.items()) + "</Item>\n")
        out.write("</DeviceList>")
        (directory / f"page{n}.xml").write_bytes(out.getvalue().encode("gb2312"))
    return {"catalog_dir": str(directory), "catalog_pages": str(len(pages)), "sum_num": str(len(rows))}


@dataclass(frozen=True)
class TracedMessage:
    """One SIP message of SIPp's -trace_msg log, as sent or received."""
    direction: str            # "sent" | "received"
    transport: str            # "UDP" | "TCP"
    raw: bytes

    @property
    def head(self) -> str:
        return self.raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")

    @property
    def first_line(self) -> str:
        return self.head.split("\r\n", 1)[0]

    @property
    def method(self) -> str | None:
        return None if self.first_line.startswith("SIP/2.0") else self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        parts = self.first_line.split(" ")
        return int(parts[1]) if self.first_line.startswith("SIP/2.0 ") and parts[1].isdigit() else None

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self) -> bytes:
        parts = self.raw.split(b"\r\n\r\n", 1)
        if len(parts) < 2:
            return b""
        length = self.header("Content-Length")
        return parts[1][:int(length)] if length and length.strip().isdigit() else parts[1]


_TRACE_SPLIT = re.compile(rb"^-{47} [0-9-]+ [0-9:.]+\n", re.M)
_TRACE_HEAD = re.compile(rb"^(UDP|TCP|TLS|SCTP) message (sent|received) (?:\([0-9]+ bytes\)|\[[0-9]+\] bytes ?):\n\n")


def parse_trace(data: bytes) -> list[TracedMessage]:
    """The SIP messages in a SIPp -trace_msg log (other lines, e.g. discarded ones, are skipped)."""
    out = []
    for chunk in _TRACE_SPLIT.split(data):
        m = _TRACE_HEAD.match(chunk)
        if not m:
            continue
        msg = chunk[m.end():]
        head, sep, rest = msg.partition(b"\r\n\r\n")
        length = re.search(rb"\r\n(?:Content-Length|l)[ \t]*:[ \t]*([0-9]+)", head + b"\r\n", re.I)
        body = rest[:int(length.group(1))] if length else b""
        out.append(TracedMessage("sent" if m.group(2) == b"sent" else "received", m.group(1).decode(),
                                 head + sep + body))
    return out


@dataclass
class SippResult:
    exit_code: int
    successful: int
    failed: int
    stats: dict[str, str]          # the last row of -trace_stat (cumulative counters are "...(C)")
    messages: str                  # the -trace_msg log (latin-1, so every byte survives)
    errors: str                    # the -trace_err log: unexpected messages, warnings, the fatal error
    output: str                    # SIPp's screen (stdout and stderr)
    trace: list[TracedMessage] = field(default_factory=list)

    @property
    def meaning(self) -> str:
        return EXIT_MEANING.get(self.exit_code, "killed or unknown")

    def received(self, what: str | None = None) -> list[TracedMessage]:
        """Messages SIPp received; `what` a method ("MESSAGE") or a status ("200")."""
        return [m for m in self.trace if m.direction == "received" and _is(m, what)]

    def sent(self, what: str | None = None) -> list[TracedMessage]:
        return [m for m in self.trace if m.direction == "sent" and _is(m, what)]

    def report(self) -> str:
        return (f"sipp exit code {self.exit_code} ({self.meaning}); calls: {self.successful} successful, "
                f"{self.failed} failed\n--- errors:\n{self.errors[-4000:]}\n--- screen:\n{self.output[-2000:]}"
                f"\n--- last messages:\n{self.messages[-3000:]}")


def _is(m: TracedMessage, what: str | None) -> bool:
    if what is None:
        return True
    return str(m.status) == what if what.isdigit() else m.method == what


class Sipp:
    """One SIPp process running one scenario. remote None: a UAS waiting on local_port."""

    def __init__(self, scenario: str | Path, remote: str | tuple[str, int] | None = None, *,
                 local_port: int | None = None, local_ip: str = "127.0.0.1", transport: str = "u1",
                 variables: Mapping[str, object] | None = None, global_variables: Mapping[str, object] | None = None,
                 injection_csv: str | Path | Iterable[Sequence[object]] | None = None, calls: int | None = None,
                 rate: float | None = None, timeout: float = 60.0, default_behaviors: str = "all,-bye",
                 extra_args: Sequence[str] = (), work_dir: Path | None = None) -> None:
        if shutil.which(SIPP) is None:
            raise AssertionError("sipp is not installed (Debian package sip-tester; ./run setup installs it)")
        if transport not in ("u1", "un", "t1", "tn"):
            raise ValueError(f"transport {transport!r}: u1, un, t1 or tn")
        path = Path(scenario)
        self.scenario = path if path.is_absolute() or path.exists() else SCENARIOS / path
        if not self.scenario.exists():
            raise FileNotFoundError(self.scenario)
        self.name = self.scenario.name
        self.work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=f"sipp-{self.scenario.stem}-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.local_ip, self.transport, self.timeout = local_ip, transport, timeout
        self.port = local_port or free_port(transport, local_ip)
        self.remote = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else remote
        keys = {k: str(v) for k, v in DEFAULTS.get(self.name, {}).items()}
        if self.name == "platform_uas.xml":
            keys["nonce"] = secrets.token_hex(16)
        keys.update({k: str(v) for k, v in (variables or {}).items()})
        if self.name == "device_uas.xml" and "catalog_dir" not in keys:
            keys.update(write_catalog(self.work / "catalog", [DEVICE_ID[:-1] + str(n) for n in range(1, 4)]))
        self.variables = keys
        args = [SIPP, "-sf", str(self.scenario)]
        if self.remote:
            args.append(self.remote)
        args += ["-i", local_ip, "-p", str(self.port), "-t", transport, "-nostdin",
                 "-default_behaviors", default_behaviors,
                 "-trace_msg", "-message_file", "messages.log", "-trace_err", "-error_file", "errors.log",
                 "-trace_stat", "-stf", "stats.csv", "-fd", "1",
                 "-timeout", f"{max(1, int(timeout))}s", "-timeout_error"]
        if calls is not None:
            args += ["-m", str(calls)]
        elif self.name == "platform_uac_catalog.xml":
            args += ["-m", "1"]
        if rate is not None:
            args += ["-r", f"{rate:g}"]
        for k, v in keys.items():
            args += ["-key", k, v]
        for k, v in (global_variables or {}).items():
            args += ["-set", k, str(v)]
        if injection_csv is not None:
            self._write_csv(injection_csv)
            args += ["-inf", "accounts.csv", "-infindex", "accounts.csv", "0"]
        args += _options(self.name, keys)
        args += list(extra_args)
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self._result: SippResult | None = None

    def _write_csv(self, source: str | Path | Iterable[Sequence[object]]) -> None:
        target = self.work / "accounts.csv"
        if isinstance(source, (str, Path)):
            shutil.copyfile(source, target)
            return
        lines = ["SEQUENTIAL"] + [";".join(str(x) for x in row) for row in source]
        target.write_text("\n".join(lines) + "\n")

    # -- running

    def start(self) -> "Sipp":
        out = open(self.work / "screen.log", "wb")
        try:
            self.proc = subprocess.Popen(self.args, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        if self.remote is None:   # a UAS: wait until its socket is bound, so a peer's first request is not lost
            self._wait_bound()
        return self

    def _wait_bound(self) -> None:
        proto = "udp" if self.transport.startswith("u") else "tcp"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"sipp exited at start:\n{self.result().report()}")
            if _bound(proto, self.port):
                return
            time.sleep(0.02)
        raise AssertionError(f"sipp did not bind {proto} port {self.port}:\n{self._read('screen.log')}")

    def __enter__(self) -> "Sipp":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float | None = None, expect: int | None = 0) -> SippResult:
        """Wait for SIPp to end (its -m calls done, or its -timeout) and return its result;
        AssertionError with SIPp's error log and trace if it is still running after timeout
        (then it is stopped) or if its exit code is not `expect` (None: any)."""
        assert self.proc is not None, "start() first"
        try:
            self.proc.wait(timeout if timeout is not None else self.timeout + 15)
        except subprocess.TimeoutExpired:
            result = self.stop()
            raise AssertionError(f"sipp {self.name} still running after {timeout} s:\n{result.report()}") from None
        result = self.result()
        if expect is not None and result.exit_code != expect:
            raise AssertionError(f"sipp {self.name}: expected exit code {expect} ({EXIT_MEANING.get(expect)})\n"
                                 f"{result.report()}")
        return result

    def stop(self, grace: float = 5.0) -> SippResult:
        """End SIPp however it is: SIGUSR1 (place no new calls, finish open ones), again (abort
        them), SIGKILL. Returns its result (a killed SIPp has exit code -9)."""
        p = self.proc
        if p is not None and p.poll() is None:
            for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGUSR1, 3.0), (signal.SIGKILL, 10.0)):
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return self.result()

    def result(self) -> SippResult:
        assert self.proc is not None
        code = self.proc.poll()
        rc = -1 if code is None else code
        stats = self._last_stats()
        messages_raw = (self.work / "messages.log").read_bytes() if (self.work / "messages.log").exists() else b""
        return SippResult(exit_code=rc, successful=int(stats.get("SuccessfulCall(C)", "0") or 0),
                          failed=int(stats.get("FailedCall(C)", "0") or 0), stats=stats,
                          messages=messages_raw.decode("latin-1"), errors=self._read("errors.log"),
                          output=self._read("screen.log"), trace=parse_trace(messages_raw))

    def _read(self, name: str) -> str:
        path = self.work / name
        return path.read_bytes().decode("utf-8", "replace") if path.exists() else ""

    def _last_stats(self) -> dict[str, str]:
        path = self.work / "stats.csv"
        if not path.exists():
            return {}
        rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1]))


def _bound(proto: str, port: int) -> bool:
    """Is anything bound to this local port (/proc/net: no process of ours needed)?"""
    want = f":{port:04X}"
    for name in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[1].endswith(want) and (proto == "udp" or cols[3] == "0A"):
                return True
    return False
