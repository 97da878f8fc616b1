"""Every setting and every command is documented in the README, and its examples are valid."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

from gpuledger.cli import main
from gpuledger.settings import Settings, load_settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_in_the_readme_table(name: str) -> None:
    description = Settings.model_fields[name].description
    assert description, f"setting {name} has no help text"
    assert f"| `{name}` | `GPULEDGER_{name.upper()}` |" in README
    assert description in README


def _commands(group: click.Group, prefix: str = "gpuledger") -> list[str]:
    out = []
    for name, command in group.commands.items():
        out.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            out += [f"{prefix} {name} {sub}" for sub in command.commands]
    return out


@pytest.mark.parametrize("command", _commands(main))
def test_every_command_is_documented(command: str) -> None:
    words = command.split()
    if len(words) == 3:  # a subcommand: `gpuledger warehouse check|compact|...`
        assert re.search(rf"gpuledger {words[1]}\s+\S*\b{words[2]}\b", README), command
    else:
        assert command in README, command


def test_readme_config_example_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = README.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "gpuledger.toml"
    path.write_text(example)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None)
    assert settings.warehouse == Path("/var/lib/gpuledger")
    assert settings.report_days == 7


def test_readme_names_the_two_commands() -> None:
    assert "make demo" in README and "make test" in README
    assert "gpuledger demo --no-dashboard" in README


@pytest.mark.parametrize("block", range(README.count("```toml\n")))
def test_every_readme_toml_example_loads(block: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = README.split("```toml\n")[block + 1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(example)
    for name in [n for n in os.environ if n.startswith("GPULEDGER_")]:
        monkeypatch.delenv(name)
    load_settings(path)  # raises SettingsError on an unknown key or a bad value
