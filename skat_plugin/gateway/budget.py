"""Token buckets: the budgets that keep hostile senders from eating the daemon (RS answers,
ICMP errors)."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def has(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1

    def take(self, now: float) -> bool:
        if self.has(now):
            self.tokens -= 1
            return True
        return False
