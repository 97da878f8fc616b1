"""The one settings object: declared once, typed, documented, loaded from TOML with ``GPULEDGER_*`` overrides.

Priority: environment (``GPULEDGER_<NAME>``) > config file (``--config``, default ``gpuledger.toml`` when present) >
defaults. Secrets never live here as values: only as environment variables or file paths.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from analysis.states import GIB, StateRules
from warehouse.rollup import RollupConfig

DEFAULT_CONFIG = Path("gpuledger.toml")


class SettingsError(Exception):
    """A config file that is missing, not TOML, or holds a bad value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPULEDGER_", extra="forbid")

    warehouse: Path | None = Field(
        default=None, description="Warehouse directory used when a command gets no --warehouse."
    )
    active_threshold_pct: float = Field(
        default=5.0, ge=0, le=100, description="A GPU-minute at or above this utilization (or SM activity) is active."
    )
    held_memory_gib: float = Field(
        default=1.0,
        ge=0,
        description="Memory in use above this makes an idle, held GPU-minute idle_held, not idle_allocated.",
    )
    max_gap_factor: float = Field(
        default=2.0, gt=0, description="A sample covers at most this many expected intervals; beyond it is no_data."
    )
    expected_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="Expected seconds between samples; unset: inferred per GPU and day (median spacing).",
    )
    report_days: float = Field(
        default=7.0, gt=0, description="Default report window: this many days ending at the newest sample."
    )
    report_top_n: int = Field(default=10, ge=1, description="Rows in each top-N list of a report.")
    retention_days: int = Field(
        default=400, ge=1, description="`gpuledger warehouse prune` drops date partitions older than this."
    )
    compact_target_rows: int = Field(
        default=4_000_000,
        ge=1,
        description="`gpuledger warehouse compact` merges small parts up to about this many rows.",
    )
    cluster: str = Field(default="default", description="Cluster name stamped on every row a collector writes.")
    flush_every_s: float = Field(
        default=60.0, gt=0, description="`gpuledger collect` writes its buffer to the warehouse this often."
    )
    spool_dir: Path = Field(
        default=Path(".gpuledger-spool"),
        description="Where `gpuledger collect` keeps batches the warehouse could not take, to replay them later.",
    )
    spool_max_mib: float = Field(
        default=256.0, gt=0, description="Bound of the spool; past it the oldest batches are dropped (and logged)."
    )
    energy_every_s: float = Field(
        default=60.0, gt=0, description="NVML energy reads (~4 ms each on an H200) happen at most this often."
    )
    pod_resources_socket: Path = Field(
        default=Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        description="The kubelet pod-resources socket used to name the pod holding each GPU (skipped if absent).",
    )
    demo_warehouse: Path = Field(
        default=Path("demo-warehouse"), description="Where `gpuledger demo` simulates its fleet."
    )
    demo_gpus: int = Field(default=64, ge=1, description="GPUs in the demo fleet.")
    demo_days: int = Field(default=7, ge=1, description="Days of history in the demo fleet.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def state_rules(self) -> StateRules:
        return StateRules(self.active_threshold_pct, int(self.held_memory_gib * GIB))

    @property
    def rollup(self) -> RollupConfig:
        return RollupConfig(max_gap_factor=self.max_gap_factor, expected_interval_s=self.expected_interval_s)


def load_settings(config: Path | None = None) -> Settings:
    """Settings from ``config`` (or ``gpuledger.toml`` when it exists), then the environment."""
    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if path is not None:
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist: pass an existing file to --config")
        try:
            tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError(f"config file {path} is not valid TOML ({exc})") from None
    file_path = path

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=file_path)

    try:
        return _FromFile()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        origin = f"config file {path} or GPULEDGER_{where.upper()}" if path else f"GPULEDGER_{where.upper()}"
        raise SettingsError(f"setting {where}: {err['msg']} (from {origin})") from None
