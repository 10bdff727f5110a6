"""The committed configuration reference is the one the models generate, and it covers every
key `check` accepts: sections, every role's device fields, nested models."""

from pathlib import Path

from edge.config.site import Config
from edge.roles import ROLES
from tools.config_reference import render

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "python -m tools.config_reference > docs/config-reference.md"


def test_committed_reference_is_current() -> None:
    committed = (ROOT / "docs/config-reference.md").read_text(encoding="utf-8")
    assert committed == render(), f"docs/config-reference.md is stale: run `{REGENERATE}`"


def test_reference_names_every_section_role_and_key() -> None:
    text = render()
    for section in Config.model_fields:
        if section != "devices":
            assert f"\n## {section}\n" in text
    for name, role in ROLES.items():
        assert f"\n## devices[] role: {name}\n" in text
        for key in role.model.model_fields:
            assert f"| `{key}` |" in text, (name, key)
    for key in ("rated_kw", "priority", "min_on_s", "safe_state", "peak_kw", "initial_soc_pct",
                "baudrate", "start", "speed"):
        assert f"| `{key}` |" in text, key
