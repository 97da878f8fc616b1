"""The minute rollup's partitions as tasks on a Dask cluster (`gpuledger warehouse rollup --scheduler ADDRESS`).

Each (date, cluster) is one task running ``warehouse.rollup.stage_partition``: the same Polars code as the
single-node rollup, reading the warehouse and staging its parts there; this process holds the writer lock meanwhile
and commits each partition as its task finishes. So the workers must see the warehouse at the same path and run the
same gpuledger (the same image or venv). Dask is optional (``pip install 'gpuledger[distributed]'``) and imported
only here; README, Commands, says how to start a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module for its error; Polars only when a rollup runs
    from warehouse.rollup import PartitionJob, PartitionOutput, Runner

CONNECT_TIMEOUT_S = 30.0
"""How long to wait for the scheduler to answer before giving up."""
POLL_S = 5.0
"""How often the scheduler is asked whether it still has workers while no task finishes."""
NO_WORKERS_S = 120.0
"""How long a scheduler may have no worker at all before the rollup gives up (its tasks would wait forever)."""


class RollupEngineError(Exception):
    """The distributed engine could not run the rollup; the CLI turns it into one line and exit code 2."""


@contextlib.contextmanager
def dask_runner(address: str) -> Iterator[Runner]:
    """A ``Runner`` that submits the jobs to the Dask scheduler at ``address`` and yields outputs as they finish."""
    connect_timeout_s = CONNECT_TIMEOUT_S
    try:
        from distributed import Client, wait
        from distributed.comm import CommClosedError
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise RollupEngineError(
            "--scheduler needs Dask's distributed package: pip install 'gpuledger[distributed]', "
            "or leave --scheduler out to roll up in this process"
        ) from None
    try:
        client = Client(address, timeout=connect_timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RollupEngineError(
            f"no Dask scheduler answered at {address} within {connect_timeout_s:g} s ({type(exc).__name__}): "
            "start one (`dask scheduler`, then `dask worker ADDRESS`) or leave --scheduler out to roll up here"
        ) from None
    kept = "the partitions committed so far are kept; run the rollup again"

    def run(task: Callable[[PartitionJob], PartitionOutput], jobs: Sequence[PartitionJob]) -> Iterator[PartitionOutput]:
        if not jobs:
            return
        pending = set(client.map(task, list(jobs), pure=False, key=[_key(job) for job in jobs]))
        without_workers_since: float | None = None
        try:
            while pending:
                try:
                    done, pending = wait(list(pending), timeout=POLL_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                for future in done:
                    yield future.result()
                if client.status != "running":
                    raise RollupEngineError(f"the Dask scheduler at {address} went away mid-rollup; {kept}")
                if done or _workers(client):
                    without_workers_since = None
                elif without_workers_since is None:
                    without_workers_since = time.monotonic()
                elif time.monotonic() - without_workers_since > NO_WORKERS_S:
                    raise RollupEngineError(
                        f"the Dask scheduler at {address} has had no workers for {NO_WORKERS_S:g} s: start them "
                        f"(`dask worker {address}`); {kept}"
                    )
        except KilledWorker as exc:
            raise RollupEngineError(
                f"Dask workers died running rollup task {exc.task}: give them more memory; {kept}"
            ) from None
        except (CancelledError, CommClosedError) as exc:  # FutureCancelledError, FuturesCancelledError
            raise RollupEngineError(
                f"the Dask scheduler at {address} went away mid-rollup ({type(exc).__name__}); {kept}"
            ) from None
        except ModuleNotFoundError as exc:
            raise RollupEngineError(
                f"the Dask workers at {address} cannot import gpuledger ({exc}): run them from the same image "
                "or venv as this gpuledger"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                client.cancel(list(pending))

    client_log = logging.getLogger("distributed.client")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # a lost scheduler is said once, in our error, not as its traceback
    try:
        with client:
            yield run
    finally:
        client_log.setLevel(level)


def _workers(client: Any) -> int:
    try:
        return len(client.scheduler_info(n_workers=-1).get("workers", {}))
    except (OSError, TimeoutError):
        return 0


def _key(job: PartitionJob) -> str:
    """A task name that tells on the Dask dashboard which partition it is."""
    return f"rollup-{job.partition.date}-{job.partition.cluster}-{job.name[5:17]}"
