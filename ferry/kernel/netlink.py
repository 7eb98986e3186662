"""The ferry link's interface, brought up with pyroute2 (netlink).

A one-way link cannot resolve ARP: the outer host gets a permanent neighbour
entry for the inner host, and the inner host never sends ARP on the link
(IFF_NOARP; the inner ruleset drops ARP output too). Where the reverse ferry
shares the link, the inner host gets a permanent entry for the outer host too. IPv6 is disabled on the
link so no autoconfiguration chatter is ever attempted on it. Every step is
idempotent: bringing up a link twice leaves it as bringing it up once.
Acts on the current network namespace; needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ferry.kernel import KernelError
from ferry.kernel.nft import ROLES, check_ifname

IFF_NOARP = 0x80
NUD_PERMANENT = 0x80
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
PROC_IPV6 = Path("/proc/sys/net/ipv6/conf")


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the link looks like after bring_up_link."""

    ifname: str
    index: int
    mac: str
    address: str            # CIDR
    noarp: bool
    neighbour: tuple[str, str] | None   # (peer ip, peer mac): the outer host's; the inner's with a reverse ferry


def _cidr(value: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise KernelError(f"bad address {value!r} (want ADDRESS/PREFIX)") from None
    if "/" not in value:
        raise KernelError(f"bad address {value!r} (want ADDRESS/PREFIX)")
    if iface.version != 4:
        raise KernelError(f"bad address {value!r}: the link carries IPv4 only (IPv6 is disabled on it)")
    return iface


def _mac(value: str) -> str:
    mac = value.lower() if isinstance(value, str) else ""
    if MAC.match(mac) is None or mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise KernelError(f"bad peer MAC {value!r} (want a unicast aa:bb:cc:dd:ee:ff)")
    return mac


def _disable_ipv6(ifname: str) -> None:
    path = PROC_IPV6 / ifname / "disable_ipv6"
    if not PROC_IPV6.exists():
        return          # IPv6 is off in this kernel or namespace altogether
    try:
        path.write_text("1\n")
    except OSError as e:
        raise KernelError(f"cannot disable IPv6 on {ifname}: {e}") from None


def bring_up_link(role: str, ifname: str, address_cidr: str, *, peer_ip: str | None = None,
                  peer_mac: str | None = None) -> LinkState:
    """Address the link, disable IPv6 on it, set it up; outer: static neighbour
    ``peer_ip -> peer_mac`` (both required); inner: ARP off, and a static neighbour only
    where the reverse ferry shares the link (its datagrams to the outer host need one)."""
    if role not in ROLES:
        raise KernelError(f"bad role {role!r} (outer or inner)")
    ifname = check_ifname(ifname, "link interface")
    iface = _cidr(address_cidr)
    neighbour = None
    if role == "outer" and (peer_ip is None or peer_mac is None):
        raise KernelError("the outer host needs --peer-ip and --peer-mac: a one-way link cannot resolve ARP")
    if role == "inner" and (peer_ip is None) != (peer_mac is None):
        raise KernelError("the inner host takes no peer, unless the reverse ferry shares the link: then both "
                          "--peer-ip and --peer-mac of the outer host (the link stays without ARP)")
    if peer_ip is not None and peer_mac is not None:
        try:
            peer = ipaddress.ip_address(peer_ip)
        except ValueError:
            raise KernelError(f"bad peer IP {peer_ip!r}") from None
        if peer.version != iface.version or peer not in iface.network:
            raise KernelError(f"peer IP {peer} is not in the link's network {iface.network}")
        neighbour = (str(peer), _mac(peer_mac))
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise KernelError(f"no interface {ifname!r} in this network namespace")
            index = found[0]
            _disable_ipv6(ifname)
            noarp = IFF_NOARP if role == "inner" else 0
            ipr.link("set", index=index, flags=noarp, change=IFF_NOARP)
            ipr.addr("replace", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            ipr.link("set", index=index, state="up")
            if neighbour is not None:
                ipr.neigh("replace", dst=neighbour[0], lladdr=neighbour[1], ifindex=index, state=NUD_PERMANENT)
            link = ipr.get_links(index)[0]
            mac = link.get_attr("IFLA_ADDRESS")
            flags = link["flags"]
    except NetlinkError as e:
        raise KernelError(f"netlink refused to set up {ifname}: {e}") from None
    except OSError as e:
        raise KernelError(f"netlink: {e}") from None
    return LinkState(ifname, index, mac, str(iface), bool(flags & IFF_NOARP), neighbour)


def link_mac(ifname: str) -> str:
    """The interface's MAC address (the outer host's neighbour entry needs the inner one's)."""
    ifname = check_ifname(ifname, "interface")
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise KernelError(f"no interface {ifname!r} in this network namespace")
        return ipr.get_links(found[0])[0].get_attr("IFLA_ADDRESS")


def link_exists(ifname: str) -> bool:
    """Whether the interface is there (yet) in this network namespace."""
    ifname = check_ifname(ifname, "interface")
    try:
        with IPRoute() as ipr:
            return bool(ipr.link_lookup(ifname=ifname))
    except (NetlinkError, OSError) as e:
        raise KernelError(f"netlink: {e}") from None
