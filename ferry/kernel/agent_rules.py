"""The agent's own kernel rules: the nftables ruleset compiled from the running
policy (``ferry.kernel.nft``), applied when the agent starts and before a new
policy is swapped in, so the kernel and the agent always enforce one policy.
A ruleset the kernel refuses stops the start, or refuses the new policy.
"""
from __future__ import annotations

from ferry.config import KernelSection
from ferry.kernel.nft import Reverse, apply_ruleset, compile_ruleset


class KernelRules:
    def __init__(self, section: KernelSection, role: str, *, link_port: int, peer_addr: str,
                 reverse: Reverse | None = None) -> None:
        self.section = section
        self.role = role
        self.link_port = link_port
        self.peer_addr = peer_addr
        self.reverse = reverse
        self.applied_hash: bytes | None = None

    def apply(self, plan) -> str:
        """Compile for ``plan`` and apply atomically; returns the ruleset. Raises KernelError."""
        text = compile_ruleset(plan, self.role, link_if=self.section.link_if, link_port=self.link_port,
                               peer_addr=self.peer_addr, ingest_if=self.section.ingest_if or None,
                               reverse=self.reverse)
        apply_ruleset(text)
        self.applied_hash = plan.hash
        return text


def reverse_of(cfg, role: str) -> Reverse | None:
    """The reverse ferry's part of the host's rules, from ``[reverse]`` (None without one). Outer: its
    listening port, from ``[kernel] reverse_peer`` (default the link's peer, the inner host);
    inner: the outer's address and port. On ``[reverse] interface``, else the link's."""
    r = getattr(cfg, "reverse", None)
    if r is None:
        return None
    if role == "outer":
        k = cfg.kernel
        return Reverse(r.listen_port, (k.reverse_peer if k is not None else "") or cfg.link.peer_host,
                       r.interface or None)
    return Reverse(r.peer_port, r.peer_host, r.interface or None)


def kernel_rules_for(cfg, role: str) -> KernelRules | None:
    k = cfg.kernel
    if k is None or not k.apply:
        return None
    if role == "outer":
        return KernelRules(k, role, link_port=cfg.link.peer_port, peer_addr=cfg.link.peer_host,
                           reverse=reverse_of(cfg, role))
    return KernelRules(k, role, link_port=cfg.link.listen_port, peer_addr=k.peer_addr, reverse=reverse_of(cfg, role))

