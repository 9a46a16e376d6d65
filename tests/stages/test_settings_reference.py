"""The README lists every setting with its default and description, as the schema has them."""

from __future__ import annotations

from stages.config import REPO_ROOT, Settings
from stages.config.reference import rows, with_table


def test_the_readme_lists_every_setting_as_the_schema_has_it() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert with_table(readme) == readme, "stale: python -m stages.config.reference README.md"
    keys = {key for key, _, _ in rows(Settings)}
    assert {"pipeline.stall_s", "pipeline.max_latency_ms", "recording.video", "mqtt.discovery_prefix"} <= keys
    assert all(description for _, _, description in rows(Settings)), "a setting without a description"
