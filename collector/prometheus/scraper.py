"""DCGM series and kube-state-metrics facts from one Prometheus, chunk by chunk, handed to a store; resumable.

What is read: the DCGM fields in :data:`DCGM_METRICS`, turned into :class:`collector.dcgm.DcgmSeries` values and
then rows by :func:`collector.dcgm.rows_from_series` (the one DCGM mapping; ``source="prometheus"``), completed with
kube-state-metrics (:mod:`collector.prometheus.kube_state`) and, where its series are missing, with the node agents'
``gpuledger_node_info``, ``gpuledger_pod_owner`` and ``gpuledger_pod_requests`` (:mod:`collector.metrics`).

Sampling: every query is ``last_over_time(<selector>[<step> - 1 ms])`` evaluated at ``start, start + step, ...``:
each step carries the newest sample of the step that ends there, and a step without a sample has no point, so a
series that stops is not stretched by Prometheus' 5-minute lookback into minutes the GPU was not seen.

Chunks and the watermark: a window is cut into chunks of at most ``max_points_per_series`` steps (Prometheus refuses
more than 11,000 points per series) and at most ``chunk_s`` seconds. Each chunk's rows are handed to ``store``
together with the state document ``prometheus-<hash>`` (one per URL and cluster) that records the chunk done, which
``store`` writes only once the rows are stored. A re-run with an overlapping window fetches only what is not done,
so a scrape killed anywhere resumes with no gap and no duplicate. Steps newer than ``now - settle_s`` are never
fetched: Prometheus may still be receiving their samples.

Speed: a chunk's queries go out ``in_flight`` at a time (``prometheus_queries_in_flight``, 2 by default), the small
kube-state-metrics ones first, and its DCGM fields in up to :data:`PARTS` parts of its time range, each part mapped
while the next one downloads (``docs/benchmarks.md``, "Issue 15: scraper speed").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import logging
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from collector.dcgm import DcgmSeries, rows_from_series
from collector.errors import NoDcgmSeries
from collector.metrics import NODE_INFO as AGENT_NODE_INFO
from collector.metrics import POD_OWNER as AGENT_POD_OWNER
from collector.metrics import POD_REQUESTS as AGENT_POD_REQUESTS
from collector.prometheus.client import MAX_POINTS_PER_SERIES, PrometheusClient, pipelined
from collector.prometheus.kube_state import (
    CPU_MEMORY_REQUESTS,
    GPU_REQUESTS,
    JOB_OWNER,
    NODE_INFO,
    NODE_LABELS,
    POD_OWNER,
    REPLICASET_OWNER,
    REQUEST_LABELS,
    RUNNING,
    KubeState,
    kube_rows,
)
from collector.prometheus.series import EPOCH, SOURCE, Series, Timestamps, dcgm_series, parse_series, parsed
from collector.prometheus.spans import Span, grid_ceil, grid_floor, merge_spans, plan_chunks, subtract_spans
from collector.rows import Rows

log = logging.getLogger(__name__)

DCGM_METRICS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
)

DESCRIBE_LIMIT = 5
"""How many jobs and metric names an error about a Prometheus without DCGM series names."""

Progress = Callable[[int, int], None]


class Stored(Protocol):
    """What ``store`` wrote: rows of each table, not counting rows already stored."""

    @property
    def samples(self) -> int: ...
    @property
    def allocations(self) -> int: ...
    @property
    def nodes(self) -> int: ...


Store = Callable[[Rows, str, dict[str, Any]], Stored]
"""``store(rows, state_name, state)``: store one chunk's rows, then write the state document ``state_name`` that
records the chunk done (one writer at a time, so a chunk is recorded done only once its rows are stored)."""
ReadState = Callable[[str], Mapping[str, Any] | None]
"""``read_state(state_name)``: the state document ``store`` last wrote under that name, None when there is none."""


@dataclass(frozen=True)
class ScrapeResult:
    points: int
    """Points (one value of one series at one step) fetched in this run."""
    samples: int
    """gpu_samples rows written (rows already stored are not counted)."""
    allocations: int
    nodes: int
    chunks: int
    """Chunks fetched in this run; a chunk is one range query per metric."""
    queries: int
    watermark: dt.datetime | None
    """End of the newest span done for this URL and cluster (exclusive), after this run."""


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a chunk's points are built.

    A chunk creates hundreds of thousands of small, acyclic objects (JSON lists, samples); each batch of them
    triggers a collection that finds nothing to free, which costs about a third of the scrape's CPU time. Reference
    counting still frees everything; the collector runs as usual once the chunk is built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


PARTS = 3
"""A chunk's DCGM queries are asked in up to this many parts (of at least PART_MIN_STEPS steps each), each part's
rows built while the next part downloads: a 6 h chunk at 60 s is three parts, a follow step one."""
PART_MIN_STEPS = 60


def dcgm_parts(span: Span, step_s: int) -> list[Span]:
    """The parts of ``span`` its DCGM queries are asked in (see :data:`PARTS`)."""
    steps = (span[1] - span[0]) // step_s
    parts = max(1, min(PARTS, steps // PART_MIN_STEPS))
    return plan_chunks([span], step_s=step_s, max_steps=-(-steps // parts))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PrometheusScraper:
    """Scrapes DCGM and kube-state-metrics series through ``client`` into ``store``, chunk by chunk.

    ``store`` and ``read_state`` keep the rows and the done spans (the caller wires in the warehouse); ``clock``
    is injectable time.
    """

    def __init__(
        self,
        client: PrometheusClient,
        *,
        cluster: str,
        store: Store,
        read_state: ReadState,
        clock: Callable[[], dt.datetime] = _utcnow,
        step_s: int = 60,
        max_points_per_series: int = MAX_POINTS_PER_SERIES,
        chunk_s: int = 6 * 3600,
        settle_s: int = 120,
        in_flight: int = 2,
    ) -> None:
        if not (isinstance(step_s, int) and step_s >= 1):
            raise ValueError(f"step_s must be a whole number of seconds >= 1, not {step_s!r}")
        if not 1 <= max_points_per_series <= MAX_POINTS_PER_SERIES:
            raise ValueError(f"max_points_per_series must be within 1..{MAX_POINTS_PER_SERIES}")
        self.client = client
        self.cluster = cluster
        self.store = store
        self.read_state = read_state
        self.clock = clock
        self.step_s = step_s
        self.max_steps = min(max_points_per_series, max(1, chunk_s // step_s))
        self.settle_s = settle_s
        self.in_flight = in_flight
        """How many range queries are under way at once (:func:`pipelined`)."""

    def __repr__(self) -> str:
        auth = self.client.credentials.describe or "none"
        return f"PrometheusScraper({self.client.url!r}, cluster={self.cluster!r}, auth={auth})"

    @property
    def state_name(self) -> str:
        digest = hashlib.sha256(f"{self.client.base}\n{self.cluster}".encode()).hexdigest()[:16]
        return f"prometheus-{digest}"

    def done_spans(self) -> list[Span]:
        state = self.read_state(self.state_name) or {}
        return merge_spans((int(a), int(b)) for a, b in state.get("done", []))

    def _state_with(self, span: Span) -> dict[str, Any]:
        """The state document that records ``span`` done, besides what is done already."""
        done = merge_spans([*self.done_spans(), span])
        return {
            "url": self.client.url,
            "cluster": self.cluster,
            "step_s": self.step_s,
            "done": [list(s) for s in done],
            "watermark": _iso(done[-1][1]),
        }

    def plan(self, start: dt.datetime, end: dt.datetime) -> list[Span]:
        """The chunks a scrape of [start, end) would fetch now: steps on the grid, minus what is done, minus the
        steps newer than ``now - settle_s``. Naive datetimes are taken as UTC."""
        if end <= start:
            raise ValueError(f"the window must end after it starts ({start.isoformat()} >= {end.isoformat()})")
        newest = grid_floor(_seconds(self.clock()) - self.settle_s, self.step_s)
        window = (grid_ceil(_seconds(start), self.step_s), min(grid_ceil(_seconds(end), self.step_s), newest))
        if window[1] <= window[0]:
            return []
        todo = subtract_spans(window, self.done_spans())
        return plan_chunks(todo, step_s=self.step_s, max_steps=self.max_steps)

    def scrape(self, start: dt.datetime, end: dt.datetime, *, progress: Progress | None = None) -> ScrapeResult:
        """Fetch [start, end), skipping what an earlier run stored; each chunk is stored, then recorded done."""
        chunks = self.plan(start, end)
        queries_before = self.client.queries
        points = samples = allocations = nodes = 0
        dcgm_known = False
        if progress:
            progress(0, len(chunks))
        for i, span in enumerate(chunks):
            rows, fetched = self.fetch(span)
            points += fetched
            if rows.samples.num_rows:
                dcgm_known = True
            elif not dcgm_known:
                self._require_dcgm((chunks[0][0], chunks[-1][1]))
                dcgm_known = True
            written = self.store(rows, self.state_name, self._state_with(span))
            samples += written.samples
            allocations += written.allocations
            nodes += written.nodes
            log.info("prometheus: %s chunk %d/%d stored (%d points)", self.client.url, i + 1, len(chunks), fetched)
            if progress:
                progress(i + 1, len(chunks))
        done = self.done_spans()
        watermark = EPOCH + dt.timedelta(seconds=done[-1][1]) if done else None
        queries = self.client.queries - queries_before
        return ScrapeResult(points, samples, allocations, nodes, len(chunks), queries, watermark)

    def _require_dcgm(self, window: Span) -> None:
        """Raise NoDcgmSeries, before anything of the window is stored, when the server holds no DCGM series in
        ``window``; asked only when a chunk came back without a GPU sample and none did before it in this run."""
        found, _ = self.client.label_values("__name__", match='{__name__=~"DCGM_FI_.+"}', span=window, limit=1)
        if found:
            return
        jobs, more_jobs = self.client.label_values("job", limit=DESCRIBE_LIMIT)
        names, more_names = self.client.label_values("__name__", limit=DESCRIBE_LIMIT)
        shown = f"{_iso(window[0])} to {_iso(window[1])}"
        raise NoDcgmSeries(self.client.url, shown, jobs, more_jobs, names, more_names)

    def fetch(self, span: Span) -> tuple[Rows, int]:
        """One chunk's rows (DCGM and kube-state-metrics) and the number of points fetched."""
        with _without_cyclic_gc():
            return self._fetch(span)

    def _fetch(self, span: Span) -> tuple[Rows, int]:
        """The small kube-state-metrics answers first, then the DCGM answers part by part (:func:`dcgm_parts`), each
        answer read as it arrives and each part's rows built while the next part's answers are on their way
        (:func:`collector.prometheus.client.pipelined`, a part ahead): the server's work on the large answers
        overlaps ours, and only the last part's tables are built after the last answer."""
        when = Timestamps()
        running = f"({self._last(GPU_REQUESTS)}) and on(namespace, pod) ({self._last(RUNNING)} == 1)"
        by = ", ".join(REQUEST_LABELS)
        summed = f"sum by ({by}) ({self._last(CPU_MEMORY_REQUESTS)})"
        gpu_pods = f"{summed} and on(namespace, pod) {self._last(GPU_REQUESTS)}"
        kube_queries = [
            self._last(NODE_LABELS),
            self._last(POD_OWNER),
            running,
            self._last(NODE_INFO),
            self._last(REPLICASET_OWNER),
            self._last(JOB_OWNER),
            gpu_pods,
            self._last(AGENT_NODE_INFO),
            self._last(AGENT_POD_OWNER),
            self._last(AGENT_POD_REQUESTS),
        ]
        calls: list[Callable[[], Any]] = [
            functools.partial(self.client.query_range, query, span, self.step_s) for query in kube_queries
        ]
        parts = dcgm_parts(span, self.step_s)
        calls += [
            functools.partial(self.client.query_range_series, self._last(metric), part, self.step_s)
            for part in parts
            for metric in DCGM_METRICS
        ]
        dcgm_points = 0
        known: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        with contextlib.closing(pipelined(calls, ahead=len(DCGM_METRICS), in_flight=self.in_flight)) as answers:
            kube_series = [parsed(self.client.url, parse_series, next(answers)) for _ in kube_queries]

            def arriving() -> Iterator[DcgmSeries]:
                """One part's answers' series, each answer let go of once read (its many small objects freed while
                the next answer is on its way, not all at the end)."""
                nonlocal dcgm_points
                for metric in DCGM_METRICS:
                    series = parsed(self.client.url, functools.partial(dcgm_series, metric, known=known), next(answers))
                    dcgm_points += sum(len(s.samples) for s in series)
                    yield from series

            built = [rows_from_series(arriving(), cluster=self.cluster, source=SOURCE, when=when) for _ in parts]
        rows = functools.reduce(operator.add, built)
        node_labels, owners, gpu_requests, node_info, replicaset_owners, job_owners, cpu_memory, *agent = kube_series
        kube = KubeState(
            node_labels, gpu_requests, owners, node_info, replicaset_owners, job_owners, cpu_memory, *agent
        )
        points = dcgm_points + sum(len(s.values) for group in kube_series for s in group)
        return kube_rows(rows, kube, cluster=self.cluster, when=when), points

    def _last(self, selector: str) -> str:
        """The newest sample within the step that ends at each evaluation time (never an older one)."""
        return f"last_over_time({selector}[{self.step_s * 1000 - 1}ms])"

    def query_range(self, query: str, span: Span) -> list[Series]:
        """``query`` evaluated at every step of ``span`` (its end excluded), as series."""
        return parsed(self.client.url, parse_series, self.client.query_range(query, span, self.step_s))


def _seconds(when: dt.datetime) -> float:
    """Epoch seconds of ``when``; a naive datetime is taken as UTC (as ``analysis.window.parse_time`` does)."""
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _iso(seconds: int) -> str:
    return (EPOCH + dt.timedelta(seconds=seconds)).isoformat()
