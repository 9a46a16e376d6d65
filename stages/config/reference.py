"""Every setting, its default and what it does, as a Markdown table made from the schema itself, so
that the README's reference never misses or misstates one (``tests/stages/config`` compares them).

    python -m stages.config.reference README.md    # rewrites the table between its markers
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stages.config.daemon import Settings
from stages.config.shipped import REPO_ROOT

BEGIN = "<!-- settings reference: made by python -m stages.config.reference -->"
END = "<!-- end of settings reference -->"


def _nested(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (directly, in a list or as an optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType):
        return next((found for arg in get_args(annotation) if (found := _nested(arg))), None)
    return None


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        factory = field.default_factory
        plain = factory.__name__ == "<lambda>" or factory in (dict, list)  # else it depends on the machine
        return _shown(factory()) if plain else "(per machine)"
    return "(required)" if field.default is PydanticUndefined else _shown(field.default)


def _shown(value: Any) -> str:
    """A default as TOML-ish JSON; a path of the checkout relative to it (the same on every machine)."""
    if isinstance(value, Path) and value.is_relative_to(REPO_ROOT):
        value = value.relative_to(REPO_ROOT)
    return f"`{json.dumps(value, default=str)}`"


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for each setting of ``model``, sections after the top level's own."""
    own, sections = [], []
    for name, field in model.model_fields.items():
        section = _nested(field.annotation)
        if section is not None:
            array = get_origin(field.annotation) is list  # an array of tables: [[streams]]
            key = f"[[{prefix}{name}]]" if array else f"[{prefix}{name}]"
            sections.append((key, "", field.description or ""))
            sections += rows(section, f"{prefix}{name}.")
        else:
            own.append((f"{prefix}{name}", _default(field), field.description or ""))
    return own + sections


def table() -> str:
    lines = ["| setting | default | what it does |", "|---|---|---|"]
    for key, default, description in rows(Settings):
        text = description.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| **{key}** | | {text} |" if key.startswith("[") else f"| `{key}` | {default} | {text} |")
    return "\n".join(lines)


def with_table(readme: str) -> str:
    """``readme`` with the table between its markers made afresh."""
    head, found, rest = readme.partition(BEGIN)
    if not found or END not in rest:
        raise ValueError("the README lacks the settings reference's markers")
    return f"{head}{BEGIN}\n{table()}\n{END}{rest.partition(END)[2]}"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(with_table(path.read_text()))
