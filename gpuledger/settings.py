"""The one settings object: declared once, typed, documented, loaded from TOML with ``GPULEDGER_*`` overrides.

Priority: environment (``GPULEDGER_<NAME>``) > config file (``--config``, default ``gpuledger.toml`` when present) >
defaults. Secrets never live here as values: only as environment variables or file paths.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError

from alerts.config import AlertRules, Delivery, Email, Reports, Scheduler, Slack, TeamChannels, team_channels_problem
from analysis.daily import DailySummaries
from analysis.mig import COMPUTE_MARGIN, MEMORY_MARGIN, MIN_HISTORY, MigAssumptions
from analysis.pricing import PriceOverrides
from analysis.spot import SpotAssumptions
from analysis.states import StateRules
from analysis.units import GIB
from gpuledger.settings_errors import BadConfigFile, BadVariable, Origin, SettingsError, explain, json_kind
from warehouse.rollup import RollupConfig

if TYPE_CHECKING:
    from analysis.recommend import RecommendOptions

DEFAULT_CONFIG = Path("gpuledger.toml")

__all__ = ["DEFAULT_CONFIG", "Settings", "SettingsError", "load_settings"]


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
        default=400, ge=1, le=36_500, description="`gpuledger warehouse prune` drops date partitions older than this."
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
    exporter_timeout_s: float = Field(
        default=10.0, gt=0, description="A dcgm-exporter request, connecting and the whole body, ends within this."
    )
    exporter_max_body_mib: float = Field(
        default=32.0, gt=0, description="A dcgm-exporter page larger than this is refused (an 8-GPU page is ~45 KiB)."
    )
    prometheus_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="`gpuledger scrape`: each Prometheus request ends within this; a query with its retries "
        "within twice this.",
    )
    prometheus_max_body_mib: float = Field(
        default=256.0, gt=0, description="`gpuledger scrape`: a Prometheus answer larger than this is refused."
    )
    prometheus_queries_in_flight: int = Field(
        default=2,
        ge=1,
        le=8,
        description="`gpuledger scrape`: how many range queries it keeps under way at once (1: one after another).",
    )
    prometheus_settle_s: int = Field(
        default=120,
        ge=0,
        description="`gpuledger scrape`: steps newer than this many seconds are not fetched yet (Prometheus may "
        "still be receiving their samples); `--follow` scrapes each step this long after it closes.",
    )
    energy_every_s: float = Field(
        default=60.0, gt=0, description="NVML energy reads (~4 ms each on an H200) happen at most this often."
    )
    pod_resources_socket: Path = Field(
        default=Path("/var/lib/kubelet/pod-resources/kubelet.sock"),
        description="The kubelet pod-resources socket used to name the pod holding each GPU (skipped if absent).",
    )
    kubelet_url: str | None = Field(
        default=None,
        description="The kubelet whose /pods gives GPU pods' owners and CPU/memory requests; unset: "
        "https://<node>:10250.",
    )
    kubelet_token_file: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="The bearer token sent to the kubelet (the agent's service account token, read at each call).",
    )
    kubelet_ca_file: Path | None = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="The CA the kubelet's serving certificate is checked against; unset: the system's CAs.",
    )
    kubelet_tls_verify: bool = Field(
        default=True, description="Check the kubelet's certificate; false only for kubelets with self-signed ones."
    )
    kube_api_url: str | None = Field(
        default=None,
        description="The API server the agent reads its own Node object from (instance type, capacity type, zone); "
        "unset: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, none outside a pod.",
    )
    kube_api_ca_file: Path | None = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        description="The CA the API server's certificate is checked against (the token is kubelet_token_file's).",
    )
    kubelet_timeout_s: float = Field(
        default=5.0, gt=0, description="A kubelet /pods request, connecting and the whole body, ends within this."
    )
    teams: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Team -> namespace glob patterns for cost allocation (unmatched namespaces are their own team).",
    )
    idle_cost: Literal["separate", "shared"] = Field(
        default="separate",
        description="Unallocated GPU cost in cost allocation: its own line (separate) or shared in proportion.",
    )
    gpu_prices: dict[str, float] = Field(
        default_factory=dict,
        description="USD per GPU-hour by GPU model, used when a node's instance type has no price.",
    )
    instance_type_prices: dict[str, float | dict[str, float]] = Field(
        default_factory=dict,
        description="USD per node-hour by instance type: a number (on-demand) or {on-demand = .., spot = ..}.",
    )
    custom_pricing_csv: Path | None = Field(
        default=None, description="An OpenCost custom-pricing CSV (pricing_schema.csv format) with node and GPU prices."
    )
    instance_type_gpu_count: dict[str, int] = Field(
        default_factory=dict,
        description="GPUs per node by instance type, for types the shipped catalog lacks (they beat its counts).",
    )
    default_gpu_price: float | None = Field(
        default=None, gt=0, description="Last-resort USD per GPU-hour when nothing else prices a GPU (OpenCost's 0.95)."
    )
    spot_checkpoint_interval_s: float = Field(
        default=300.0, ge=0, description="Seconds between checkpoints assumed for a job whose interval is unknown."
    )
    spot_restart_overhead_s: float = Field(
        default=120.0,
        ge=0,
        description="Seconds a spot interruption costs to get a replacement node scheduled and booted.",
    )
    spot_image_pull_s: float = Field(
        default=300.0, ge=0, description="Seconds a spot interruption costs to pull the image onto the new node."
    )
    spot_warm_up_s: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a spot interruption costs from container start to useful work (load, rejoin).",
    )
    spot_workload_kinds: dict[str, str] = Field(
        default_factory=dict,
        description="Workload kind (training, batch, inference, service, notebook) by namespace/workload glob.",
    )
    spot_checkpoint_intervals_s: dict[str, float] = Field(
        default_factory=dict, description="Checkpoint interval in seconds by namespace/workload glob."
    )
    mig_percentile: float = Field(
        default=0.95, gt=0, le=1, description="MIG fit: the utilization percentile a workload's compute demand uses."
    )
    mig_compute_margin: float = Field(
        default=COMPUTE_MARGIN,
        ge=1,
        description="MIG fit: safety margin on compute demand (scaled up for short histories).",
    )
    mig_memory_margin: float = Field(default=MEMORY_MARGIN, ge=1, description="MIG fit: safety margin on peak memory.")
    mig_half_life_hours: float = Field(
        default=24.0, gt=0, description="MIG fit: half-life of the decaying utilization histogram, in hours."
    )
    mig_min_history_hours: float = Field(
        default=MIN_HISTORY.total_seconds() / 3600,
        ge=0,
        description="MIG fit: hours of observed history a workload needs before a profile is claimed for it.",
    )
    idle_reclaim_hours: float = Field(
        default=24.0,
        gt=0,
        description="Idle reclaim: a workload holding GPUs with none active this many hours in a row is a "
        "scale-to-zero candidate.",
    )
    time_slicing_max_replicas: int = Field(
        default=4, ge=2, le=64, description="Time-slicing: the most pods one GPU is shared by."
    )
    time_slicing_duty_target: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Time-slicing: the p95 duty cycles of the pods sharing one GPU add up to at most this.",
    )
    autoscaling_min_percentile: float = Field(
        default=0.1, ge=0, le=1, description="Autoscaling: min nodes cover this percentile of allocated-GPU demand."
    )
    autoscaling_max_percentile: float = Field(
        default=1.0, ge=0, le=1, description="Autoscaling: max nodes cover this percentile of allocated-GPU demand."
    )
    autoscaling_headroom: float = Field(
        default=1.2, ge=1, description="Autoscaling: max nodes cover the max percentile times this headroom."
    )
    recommend_confidence_days: float = Field(
        default=7.0, gt=0, description="Recommendations: days of history at which confidence reaches 1."
    )
    karpenter_node_class: str = Field(
        default="default", description="Recommendations: the EC2NodeClass that exported Karpenter NodePools reference."
    )
    demo_warehouse: Path = Field(
        default=Path("demo-warehouse"), description="Where `gpuledger demo` simulates its fleet."
    )
    demo_gpus: int = Field(default=64, ge=1, description="GPUs in the demo fleet.")
    demo_days: int = Field(default=7, ge=1, description="Days of history in the demo fleet.")
    metrics_every_s: float = Field(
        default=60.0, gt=0, description="`gpuledger server`: the cost metrics on /metrics are recomputed this often."
    )
    rollup_every_s: float = Field(
        default=60.0, gt=0, description="`gpuledger server`: the minute rollup is brought up to date this often."
    )
    alerts: AlertRules = Field(
        default_factory=AlertRules,
        description="Alert rules: thresholds (0 turns a rule off), cooldown, when to evaluate, where to send.",
    )
    reports: Reports = Field(
        default_factory=Reports, description="Scheduled reports: daily and weekly cron, list length, channels."
    )
    scheduler: Scheduler = Field(
        default_factory=Scheduler,
        description="`gpuledger schedule`: time zone, misfire grace time, coalescing, outbox retry interval.",
    )
    slack: Slack | None = Field(
        default=None, description="Slack incoming webhook; its URL comes from an environment variable or a file."
    )
    email: Email | None = Field(
        default=None,
        description="SMTP server, sender and recipients; the password comes from the environment or a file.",
    )
    team_channels: dict[str, TeamChannels] = Field(
        default_factory=dict,
        description="Team (of `teams`) -> its own Slack webhook and email recipients: its daily and weekly reports "
        "and the alerts about its namespaces.",
    )
    delivery: Delivery = Field(
        default_factory=Delivery, description="Retries, backoff, timeouts and how long the sent ledger is kept."
    )

    @field_validator("team_channels")
    @classmethod
    def _team_channels_fit(cls, value: dict[str, TeamChannels], info: ValidationInfo) -> dict[str, TeamChannels]:
        if "teams" in info.data and "email" in info.data:  # else their own error is the one to report
            problem = team_channels_problem(value, info.data["teams"], info.data["email"])
            if problem:
                raise PydanticCustomError("team_channels", problem)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _Environment(settings_cls), TomlConfigSettingsSource(settings_cls))

    @property
    def state_rules(self) -> StateRules:
        return StateRules(self.active_threshold_pct, int(self.held_memory_gib * GIB))

    def price_overrides(self) -> PriceOverrides:
        """The configured prices (reads ``custom_pricing_csv`` when set)."""
        return PriceOverrides.load(
            gpu_model_usd_per_gpu_hour=self.gpu_prices,
            instance_type_usd_per_hour=self.instance_type_prices,
            custom_pricing_csv=self.custom_pricing_csv,
            default_gpu_usd_per_gpu_hour=self.default_gpu_price,
            instance_type_gpu_count=self.instance_type_gpu_count,
        )

    @property
    def spot_assumptions(self) -> SpotAssumptions:
        return SpotAssumptions(
            checkpoint_interval_s=self.spot_checkpoint_interval_s,
            restart_overhead_s=self.spot_restart_overhead_s,
            image_pull_s=self.spot_image_pull_s,
            warm_up_s=self.spot_warm_up_s,
        )

    @property
    def mig_assumptions(self) -> MigAssumptions:
        return MigAssumptions(
            percentile=self.mig_percentile,
            compute_margin=self.mig_compute_margin,
            memory_margin=self.mig_memory_margin,
            half_life=dt.timedelta(hours=self.mig_half_life_hours),
            min_history=dt.timedelta(hours=self.mig_min_history_hours),
        )

    @property
    def rollup(self) -> RollupConfig:
        return RollupConfig(max_gap_factor=self.max_gap_factor, expected_interval_s=self.expected_interval_s)

    @property
    def recommend_options(self) -> RecommendOptions:
        from analysis.recommend import RecommendOptions  # the whole recommend package: not for every command

        return RecommendOptions(
            idle_reclaim_hours=self.idle_reclaim_hours,
            time_slicing_max_replicas=self.time_slicing_max_replicas,
            time_slicing_duty_target=self.time_slicing_duty_target,
            autoscaling_min_percentile=self.autoscaling_min_percentile,
            autoscaling_max_percentile=self.autoscaling_max_percentile,
            autoscaling_headroom=self.autoscaling_headroom,
            confidence_days=self.recommend_confidence_days,
            compute_margin=self.mig_compute_margin,
            memory_margin=self.mig_memory_margin,
            karpenter_node_class=self.karpenter_node_class,
            workload_kinds=dict(self.spot_workload_kinds),
        )

    @property
    def summaries(self) -> DailySummaries:
        """The daily summaries the rollup keeps for the report (the MIG ones depend on the MIG settings)."""
        return DailySummaries.for_assumptions(self.mig_assumptions)


class _Environment(EnvSettingsSource):
    """The ``GPULEDGER_*`` variables; one that does not hold the JSON its setting takes is named, never echoed."""

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            reason = getattr(exc, "msg", None) or type(exc).__name__
            position = getattr(exc, "pos", None)
            where = f" at character {position + 1}" if isinstance(position, int) else ""
            raise BadVariable(field_name, f"{reason}{where}", json_kind(field.annotation)) from None


def load_settings(config: Path | None = None) -> Settings:
    """Settings from ``config`` (or ``gpuledger.toml`` when it exists), then the environment.

    Every failure is a :class:`SettingsError` of one line naming the variable or the file's key, never its value."""
    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    file: Origin | None = None
    if path is not None:
        if not path.is_file():
            raise BadConfigFile(path, "does not exist: pass an existing file to --config")
        try:
            file = Origin(tomllib.loads(path.read_text(encoding="utf-8")), path)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadConfigFile(path, f"is not valid TOML ({_first_line(exc)}): fix it there") from None
        except OSError as exc:
            raise BadConfigFile(path, f"cannot be read ({exc.strerror}): check its permissions") from None
    file_path = path

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=file_path)

    try:
        env = Origin(_Environment(Settings)())
        loaded = _FromFile()
    except ValidationError as exc:
        raise explain(Settings, exc.errors(include_input=False), env, file) from None
    except SourceError as exc:  # a source failed in a way the checks above do not know: pydantic names the field
        raise SettingsError(f"settings could not be read: {_first_line(exc)}") from None
    # the validated values as a plain Settings: the class made here for the file cannot be pickled (the dashboard
    # hands the settings to a worker process)
    return Settings.model_construct(_fields_set=loaded.model_fields_set, **dict(loaded))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
