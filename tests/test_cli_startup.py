"""``--help`` and usage errors answer without importing the heavy libraries (issue 16); the time is measured in
``make bench`` (``bench/cli.py``), never here.

The cases run in a fresh interpreter (one per test), as a user starts ``gpuledger``, which notes after each case
the heavy modules loaded so far.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.testing import Result

from gpuledger.cli import main

HEAVY = ("polars", "duckdb", "pyarrow", "numpy", "pandas", "pydantic", "pydantic_settings", "streamlit", "requests")
PROBE = """
import json, sys
from gpuledger.cli import main
heavy = set(json.loads(sys.argv[2]))
done = []
for args in json.loads(sys.argv[3]):
    try:
        main(args, prog_name="gpuledger")
        code = 0
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
    done.append({"args": args, "exit": code, "heavy": loaded})
with open(sys.argv[1], "w") as out:
    json.dump(done, out)
"""
"""Runs ``gpuledger ARGS`` for each ARGS in turn in one interpreter, noting after each the heavy modules loaded so
far (the first case that loads one is the one that shows it)."""
USAGE_ERRORS = [
    (["frobnicate"], "No such command 'frobnicate'."),
    (["report", "--no-such-option"], "No such option '--no-such-option'."),
    (["query"], "Missing argument 'SQL'."),
    (["simulate", "--gpus", "many"], "Invalid value for '--gpus': 'many' is not a valid integer range."),
    (["warehouse", "check", "--quarantine=yes"], "Option '--quarantine' does not take a value."),
]


def probe(tmp_path: Path, cases: list[list[str]]) -> list[dict[str, Any]]:
    out = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), json.dumps(HEAVY), json.dumps(cases)],
        cwd=tmp_path,  # no gpuledger.toml
        env=env,
        capture_output=True,
        check=True,
    )
    done: list[dict[str, Any]] = json.loads(out.read_text())
    return done


def every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    found = []
    for name, command in group.commands.items():
        found.append([*prefix, name])
        if isinstance(command, click.Group):
            found += every_command(command, (*prefix, name))
    return found


def test_help_of_every_command_imports_nothing_heavy(tmp_path: Path) -> None:
    cases = [["--help"], ["--version"], *([*command, "--help"] for command in every_command(main))]
    assert len(cases) > 15  # every command, the warehouse subcommands too
    done = probe(tmp_path, cases)
    assert [(c["args"], c["exit"]) for c in done] == [(args, 0) for args in cases]
    assert [(c["args"], c["heavy"]) for c in done if c["heavy"]] == []


def test_usage_errors_import_nothing_heavy(tmp_path: Path) -> None:
    done = probe(tmp_path, [args for args, _ in USAGE_ERRORS])
    assert [(c["args"], c["exit"]) for c in done] == [(args, 2) for args, _ in USAGE_ERRORS]
    assert [(c["args"], c["heavy"]) for c in done if c["heavy"]] == []


def test_the_probe_sees_a_command_that_runs_load_them(tmp_path: Path) -> None:
    """The same probe, on a command that runs: it loads the settings (Pydantic) and the warehouse (PyArrow)."""
    (tmp_path / "wh").mkdir()
    (done,) = probe(tmp_path, [["report", "--warehouse", str(tmp_path / "wh")]])
    assert done["exit"] == 2  # the warehouse holds no samples
    loaded = {m.split(".")[0] for m in done["heavy"]}
    assert {"pydantic", "pyarrow", "polars"} <= loaded


def test_usage_errors_say_what_is_wrong(cli: Callable[..., Result]) -> None:
    for args, message in USAGE_ERRORS:
        result = cli(*args)
        assert result.exit_code == 2, args
        assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"


def test_help_reads_no_settings_but_a_command_that_runs_does(cli: Callable[..., Result], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    shown = cli("--config", str(missing), "warehouse", "check", "--help")
    assert shown.exit_code == 0 and shown.stdout.startswith("Usage: main warehouse check")
    ran = cli("--config", str(missing), "warehouse", "check", "--warehouse", str(tmp_path))
    assert (ran.exit_code, ran.stderr.strip()) == (
        2,
        f"Error: config file {missing} does not exist: pass an existing file to --config",
    )
