import os
import pwd
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from pipeline.settings import ConfigError, EnvOverridesFile, load_settings


class Section(BaseModel, extra="forbid"):
    threshold: float = Field(0.5, ge=0, le=1)
    name: str = "default"


class Schema(EnvOverridesFile):
    section: Section = Section()


def test_file_values_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[section]\nthreshold = 0.25\n")
    settings = load_settings(Schema, path)
    assert settings.section.threshold == 0.25 and settings.section.name == "default"


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[section]\nthreshold = 0.25\n")
    monkeypatch.setenv("VESTWATCH_SECTION__THRESHOLD", "0.75")
    assert load_settings(Schema, path).section.threshold == 0.75


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[section]\nthreshold = 3\n", "c.toml: section.threshold: Input should be less than or equal to 1"),
        ("[section]\nthresold = 0.1\n", "c.toml: section.thresold: Extra inputs are not permitted"),
        ("[section\n", "c.toml: not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(Schema, path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(Schema, tmp_path / "absent.toml")


def test_a_config_that_cannot_be_read_is_one_line_naming_it_and_the_user(tmp_path: Path) -> None:
    """A folder where the file should be; and, where the tests do not run as root (root reads any
    file), a file the user may not read, as after installing it root:root 0640 for a service user."""
    unreadable = [tmp_path / "folder.toml"]
    unreadable[0].mkdir()
    if os.geteuid() != 0:
        unreadable.append(tmp_path / "root-only.toml")
        unreadable[1].write_text("[detector]\n")
        unreadable[1].chmod(0)
    user = pwd.getpwuid(os.geteuid()).pw_name
    for path in unreadable:
        with pytest.raises(ConfigError) as caught:
            load_settings(Schema, path)
        assert str(caught.value).startswith(f"{path}: cannot read it as user {user} (")
        assert "\n" not in str(caught.value)
