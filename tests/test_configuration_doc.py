"""docs/configuration.md documents every key the plugin owns, and no key it does not."""

from __future__ import annotations

import re

from netlab import REPO

from skat_plugin.config import schema


def test_every_key_has_its_paragraph() -> None:
    text = (REPO / "docs" / "configuration.md").read_text()
    documented = re.findall(r"^\*\*`([a-z0-9_]+)=`\*\*", text, flags=re.M)
    assert sorted(documented) == sorted(schema.KEYS), "keep docs/configuration.md in step"
    for key, spec in schema.KEYS.items():
        if "default" in spec:
            paragraph = text.split(f"**`{key}=`**", 1)[1].split("\n\n", 1)[0]
            assert "default" in paragraph.lower(), f"{key}: state its default"
