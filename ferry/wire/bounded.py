"""Small bounded helpers of the receiver: a size-capped memory of recent keys and a token bucket."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(dict[K, V], Generic[K, V]):
    """A dict that forgets its oldest entries beyond `cap` (insertion order)."""

    __slots__ = ("cap",)

    def __init__(self, cap: int) -> None:
        super().__init__()
        if cap < 1:
            raise ValueError("cap must be positive")
        self.cap = cap

    def put(self, key: K, value: V) -> None:
        self[key] = value
        if len(self) > self.cap:
            del self[next(iter(self))]


class TokenBucket:
    """`rate` tokens per second, at most `rate` held; driven by the caller's `now` (monotonic)."""

    __slots__ = ("rate", "tokens", "last")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if now > self.last:
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
