"""The import contracts in pyproject.toml (``[tool.importlinter]``, what ``make lint`` runs as ``lint-imports``) hold,
so a wrong-way import fails CI; and they are not vacuous: the same packages with the layers turned upside down break."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` as ``make lint`` runs it, in a process of its own (in this one it took over the logging that
    later tests capture)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_way_import_breaks_the_layers(tmp_path: Path) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    packages = ", ".join(f'"{p}"' for p in config["root_packages"])
    upside_down = ", ".join(f'"{layer}"' for layer in reversed(layers))
    path = tmp_path / "upside-down.toml"
    path.write_text(
        f"[tool.importlinter]\nroot_packages = [{packages}]\n\n[[tool.importlinter.contracts]]\n"
        f'name = "upside down"\ntype = "layers"\nlayers = [{upside_down}]\n'
    )
    result = lint_imports(path)
    assert result.returncode != 0
    assert "upside down BROKEN" in result.stdout
