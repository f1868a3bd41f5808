"""Fault soak: jobs against an emulator injecting faults, dying workers, a refusing service.

Every faulty run is compared with a fault-free run of the same job, array by array: a soak
passes only if nothing was lost and nothing differs. Prints the figures of one run.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ps1dask.bench.registry import BenchResult, register

KINDS = ("503", "429", "reset", "truncate", "stall")

#: Short timeouts and backoff so that stalls and refusals cost seconds, not minutes; attempts
#: high enough that 20% faults never exhaust them. Timeouts stay below the lease timeout.
SOAK_HTTP = {
    "ps1dask.http.connect-timeout": 1,
    "ps1dask.http.read-timeout": 1,
    "ps1dask.http.backoff-initial": 0.05,
    "ps1dask.http.backoff-max": 0.5,
    "ps1dask.http.attempts": 10,
}
LEASE = {
    "distributed.scheduler.locks.lease-timeout": "4s",
    "distributed.scheduler.locks.lease-validation-interval": "250ms",
}


def _field(n: int, seed: int) -> pd.DataFrame:
    """``n`` positions over a few skycells (0.6 x 0.6 deg), named, as a survey field."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "name": [f"t{i:05d}" for i in range(n)],
            "ra": rng.uniform(332.3, 332.9, n),
            "dec": rng.uniform(1.9, 2.5, n),
        }
    )


def _arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[:]) for name, arr in group.arrays()}


def _differences(a: Path, b: Path) -> list[str]:
    xa, xb = _arrays(a), _arrays(b)
    diffs = sorted(set(xa) ^ set(xb))
    for name in sorted(set(xa) & set(xb)):
        if xa[name].shape != xb[name].shape:
            diffs.append(name)
        elif xa[name].dtype.kind == "f":
            if not np.array_equal(xa[name], xb[name], equal_nan=True):
                diffs.append(name)
        elif not (xa[name] == xb[name]).all():
            diffs.append(name)
    return diffs


@register("faults")
def bench_faults(
    n: int = 400,
    workers: int = 2,
    seed: int = 4,
    latency: float = 0.05,
    rates: tuple[float, ...] = (0.05, 0.2),
    filters: str = "gr",
    size: int = 32,
) -> BenchResult:
    import dask.config
    import distributed

    import ps1dask
    from ps1dask.bench.remote_emulator import emulator_process
    from ps1dask.client import PS1Service
    from ps1dask.execution import JobAbortedError
    from ps1dask.execution.localcluster import start_local_cluster

    result = BenchResult("faults")
    table = _field(n, seed)
    with (
        tempfile.TemporaryDirectory() as tmp,
        dask.config.set(LEASE),
        emulator_process(Path(tmp) / "emu", seed=seed, latency=latency) as emu,
    ):
        root = Path(tmp)
        cluster = start_local_cluster(workers, 2, silence_logs=logging.CRITICAL)
        client = distributed.Client(cluster, set_as_default=False)
        with dask.config.set(SOAK_HTTP):
            service = PS1Service(emu.url)

        def run(store: Path, strategy: str = "cutout") -> Any:
            return ps1dask.cutouts(
                table,
                store,
                filters=filters,
                size=size,
                strategy=strategy,
                service=service,
                client=client,
                progress=False,
                max_unit_positions=16,
                cache_dir=root / f"cache-{store.stem}",
            )

        try:
            # The real service has its whole files on disk; the emulator renders them on first
            # request (slower than the short read timeout used here): render them first.
            from ps1dask.conventions import image_filename
            from ps1dask.tessellation import SkycellId, locate

            emu.configure(fault_rate=0.0, latency=0.0)
            cells = locate(table.ra, table.dec).skycell.unique()
            emu.render_files(
                [image_filename(SkycellId.parse(c), b) for c in cells for b in filters]
            )
            emu.configure(latency=latency)
            t0 = time.perf_counter()
            reference = run(root / "reference.zarr")
            n_cut = reference.statuses.get("ok", 0)
            result.say(
                f"faults: {n} positions x {filters} ({n_cut} cutouts) on {workers} workers, emulator "
                f"latency {latency} s; fault-free reference in {time.perf_counter() - t0:.1f} s"
            )
            rows: list[dict[str, Any]] = []
            mixes = [((kind,), rate) for kind in KINDS for rate in rates] + [(KINDS, max(rates))]
            for kinds, rate in mixes:
                label = (
                    f"{'+'.join(kinds) if len(kinds) < len(KINDS) else 'all kinds'} at {rate:.0%}"
                )
                for strategy in ("cutout",) if len(kinds) == 1 else ("cutout", "auto"):
                    store = root / f"{'-'.join(kinds)}-{rate}-{strategy}.zarr"
                    emu.configure(
                        fault_rate=rate,
                        fault_kinds=list(kinds),
                        retry_after=0.2,
                        stall_seconds=3.0,
                        seed=seed + len(rows),
                    )
                    emu.reset_metrics()
                    t0 = time.perf_counter()
                    summary = run(store, strategy)
                    seconds = time.perf_counter() - t0
                    m = emu.metrics()
                    emu.configure(fault_rate=0.0)
                    diffs = _differences(root / "reference.zarr", store)
                    ok = summary.statuses.get("ok", 0)
                    rows.append(
                        {
                            "mix": label,
                            "strategy": strategy,
                            "cutouts": ok,
                            "lost": n_cut - ok,
                            "differ": diffs,
                            "faults": m["faults_injected"],
                            "requests": m["requests_total"],
                            "max_in_flight": m["max_in_flight"],
                            "seconds": seconds,
                        }
                    )
                    result.say(
                        f"  {label:22s} {strategy:6s} {ok} cutouts, lost {n_cut - ok}, "
                        f"{'identical' if not diffs else 'DIFFER: ' + ', '.join(diffs)}; "
                        f"{m['faults_injected']} faults in {m['requests_total']} requests, "
                        f"max in flight {m['max_in_flight']}, {seconds:.1f} s"
                        + (f"\n      first error: {summary.errors[0]}" if summary.errors else "")
                    )
            result.figures["mixes"] = rows

            # worker kills: SIGKILL one worker process mid-job, later another (the nannies
            # restart them)
            emu.configure(latency=max(latency, 0.1))
            emu.reset_metrics()
            store = root / "killed.zarr"
            outcome: list[Any] = []
            thread = threading.Thread(target=lambda: outcome.append(_call(run, store)), daemon=True)
            thread.start()
            kills = 0
            while thread.is_alive() and kills < 2:
                time.sleep(1.5)
                pids = sorted(client.run(os.getpid).values())
                if thread.is_alive() and pids:
                    os.kill(pids[kills % len(pids)], signal.SIGKILL)
                    kills += 1
                    time.sleep(2.0)
            thread.join()
            m = emu.metrics()
            emu.configure(latency=latency)
            summary = outcome[0]
            if isinstance(summary, BaseException):
                result.say(f"  worker kills: the job FAILED: {summary!r}")
                result.figures["kills"] = {"failed": repr(summary)}
            else:
                diffs = _differences(root / "reference.zarr", store)
                ok = summary.statuses.get("ok", 0)
                redone = m["requests_by_endpoint"].get("/cgi-bin/fitscut.cgi", 0) - n_cut
                result.figures["kills"] = {
                    "killed": kills,
                    "cutouts": ok,
                    "lost": n_cut - ok,
                    "differ": diffs,
                    "redone_requests": redone,
                    "max_in_flight": m["max_in_flight"],
                }
                result.say(
                    f"  {kills} worker processes killed: {ok} cutouts, lost {n_cut - ok}, "
                    f"{'identical' if not diffs else 'DIFFER: ' + ', '.join(diffs)}, "
                    f"{redone} requests redone, max in flight {m['max_in_flight']}"
                )

            # a service that keeps refusing: back off, stop with a clear message, resume
            store = root / "refused.zarr"
            emu.configure(fault_rate=1.0, fault_kinds=["503"], retry_after=1.0)
            emu.reset_metrics()
            with dask.config.set({**SOAK_HTTP, "ps1dask.http.attempts": 4}):
                refusing = PS1Service(emu.url)
            t0 = time.perf_counter()
            try:
                ps1dask.cutouts(
                    table,
                    store,
                    filters=filters,
                    size=size,
                    strategy="cutout",
                    service=refusing,
                    client=client,
                    progress=False,
                    max_unit_positions=16,
                )
                message = "did NOT stop"
            except JobAbortedError as err:
                message = str(err).split(". ")[0]
            seconds = time.perf_counter() - t0
            m = emu.metrics()
            emu.configure(fault_rate=0.0)
            summary = run(store)
            diffs = _differences(root / "reference.zarr", store)
            result.figures["refusing"] = {
                "seconds": seconds,
                "requests": m["requests_total"],
                "rate": m["requests_total"] / seconds,
                "resumed_ok": summary.statuses.get("ok", 0),
                "differ": diffs,
            }
            result.say(
                f"  persistent 503: {message!r} after {seconds:.1f} s, {m['requests_total']} requests "
                f"({m['requests_total'] / seconds:.0f}/s, max in flight {m['max_in_flight']}); "
                f"rerun once the service recovered: {summary.statuses.get('ok', 0)} cutouts, "
                f"{'identical' if not diffs else 'DIFFER'}"
            )
        finally:
            client.close()
            cluster.close()
    lost = sum(r["lost"] for r in result.figures["mixes"]) + result.figures.get("kills", {}).get(
        "lost", 0
    )
    differ = [r["mix"] for r in result.figures["mixes"] if r["differ"]]
    worst = max(
        [r["max_in_flight"] for r in result.figures["mixes"]]
        + [result.figures.get("kills", {}).get("max_in_flight", 0)]
    )
    result.figures.update(lost=lost, differ=differ, max_in_flight=worst)
    result.say(
        f"  overall: {'NOTHING lost' if not lost else f'{lost} cutouts LOST'}, "
        f"{'every store identical to the fault-free run' if not differ else 'differences in ' + ', '.join(differ)}, "
        f"max in flight {worst} (limit 10)"
    )
    return result


def _call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except BaseException as err:  # noqa: BLE001 - reported by the benchmark
        return err
