"""Kernel rules from the policy: nftables rulesets and the ferry link's interface.

    text = nft.compile_ruleset(plan, "outer", link_if="ferry0", link_port=47000, peer_addr="10.0.9.2")
    nft.apply_ruleset(text)                   # one atomic nftables transaction
    netlink.bring_up_link("outer", "ferry0", "10.0.9.1/30", peer_ip="10.0.9.2", peer_mac="02:..")

``ferry.kernel.nft.compile_ruleset`` is pure; ``apply_ruleset``/``read_counters``
(libnftables through pip-nftables) and ``ferry.kernel.netlink`` (pyroute2) change
the kernel of the current network namespace and need CAP_NET_ADMIN.
"""

from __future__ import annotations


class KernelError(Exception):
    """The one error family of ferry.kernel: bad parameters, nft or netlink refusals."""


__all__ = ["KernelError"]
