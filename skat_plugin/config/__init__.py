"""The validated configuration: what `start` and `reload` load, and `vrrp set` re-uses.

`vrrp set` never reads fastdpi.conf: keepalived's order must not fail because somebody is
half-way through editing the file. It uses the snapshot saved by the last start or reload.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_PATH = "/etc/dpi/fastdpi.conf"


def config_path(cli_value: str | None = None) -> str:
    """--config beats FDPI_CONF beats the SKAT default."""
    return cli_value or os.environ.get("FDPI_CONF") or DEFAULT_PATH


class Config:
    """A validated configuration: where it was read from, and the plugin's typed values.

    A plain class, not a dataclass: `vrrp show` and the track script build one from the
    state snapshot, and importing dataclasses alone costs them ~10 ms.
    """

    __slots__ = ("source", "values")

    def __init__(self, source: str, values: dict[str, Any]) -> None:
        self.source = source
        self.values = values

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and (self.source, self.values) == \
            (other.source, other.values)

    __hash__ = None  # type: ignore[assignment]  # values is a dict

    def __repr__(self) -> str:
        return f"Config(source={self.source!r}, values={self.values!r})"

    def __getitem__(self, key: str) -> Any:
        if key in self.values:
            return self.values[key]
        value = default(key)  # a snapshot saved before the key existed
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, fallback: Any = None) -> Any:
        """The key's value; where the configuration does not have it (a snapshot saved
        before the key existed), its documented default, else `fallback`."""
        if key in self.values:
            return self.values[key]
        value = default(key)
        return fallback if value is None else value

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(in_dev, out_dev) port pairs; each pair is one bridge."""
        return list(zip(self.values["in_dev"], self.values["out_dev"], strict=False))

    @property
    def in_ports(self) -> list[str]:
        return list(self.values["in_dev"])

    @property
    def ports(self) -> list[str]:
        return list(self.values["in_dev"]) + list(self.values["out_dev"])

    @property
    def vrrp_enabled(self) -> bool:
        return self.values["vrrp_enable"] == 1

    @property
    def has_ipv6(self) -> bool:
        return self.values.get("bras_ipv6_address") is not None

    @property
    def terminates(self) -> bool:
        """SKAT's L2 termination: the master carries subscribers' traffic (docs/gateway.md)."""
        return self.values.get("bras_terminate_l2", 0) == 1

    @property
    def advertises_router(self) -> bool:
        """Router Advertisements: only a gateway that forwards IPv6 may call itself a router."""
        return (self.terminates and self.has_ipv6
                and self.values.get("bras_ipv6_router_pref", 0) != -1)

    def snapshot(self) -> dict[str, Any]:
        return {"source": self.source, "values": dict(self.values)}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Config:
        return cls(data["source"], dict(data["values"]))


def default(key: str) -> Any:
    """The documented default of a key (schema.KEYS, the one home of defaults), or None."""
    from .schema import KEYS  # only when a snapshot lacks a key: `vrrp show` seldom pays

    return KEYS.get(key, {}).get("default")


def load(path: str) -> Config:
    """Read and validate fastdpi.conf; raises ConfigError naming file, line and key."""
    from . import conffile, schema  # jsonschema is slow to import; `vrrp set` never needs it

    return Config(path, schema.validate(conffile.read(path)))
