#!/usr/bin/env python3
"""Start a ps1dask Dask cluster on SLURM or PBS with dask-jobqueue and keep it up.

    cp deploy/jobqueue.yaml ~/.config/dask/ps1dask-jobqueue.yaml   # then edit queue/account
    python deploy/hpc_cluster.py slurm --jobs 4
    # in another shell on the login node, with the address it printed:
    ps1dask cutouts targets.csv -o /scratch/$USER/cutouts.zarr --scheduler tcp://HOST:PORT

The scheduler runs inside this process (on the login node or in a small batch job of its own):
keep it running (tmux/screen) while jobs use it; Ctrl-C stops the workers' batch jobs too.
Settings come from the ``jobqueue.slurm`` / ``jobqueue.pbs`` sections of the dask config;
``--config`` reads a YAML file such as deploy/jobqueue.yaml instead of ~/.config/dask.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=["slurm", "pbs"], help="batch system")
    parser.add_argument(
        "--jobs", type=int, default=2, help="worker batch jobs to submit (default 2)"
    )
    parser.add_argument(
        "--config", default=None, help="dask config YAML (e.g. deploy/jobqueue.yaml)"
    )
    parser.add_argument(
        "--host", default=None, help="scheduler address to bind (default: the interface's)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the job script and exit")
    args = parser.parse_args(argv)

    import dask.config
    import yaml

    if args.config:
        with open(args.config) as fh:
            loaded = yaml.safe_load(fh) or {}
        dask.config.update(dask.config.config, loaded, priority="new")
    try:
        import dask_jobqueue
    except ImportError:
        print(
            "hpc_cluster.py: error: needs dask-jobqueue (pip install dask-jobqueue)",
            file=sys.stderr,
        )
        return 1
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[args.system]
    scheduler_options = {"host": args.host} if args.host else {}
    cluster = cls(scheduler_options=scheduler_options) if scheduler_options else cls()
    try:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        lease = dask.config.get("distributed.scheduler.locks.lease-timeout")
        url = dask.config.get("ps1dask.service.url")
        cluster.scale(jobs=args.jobs)
        print(cluster.scheduler_address, flush=True)  # FIRST line: scripts read it
        print(
            f"dashboard {cluster.dashboard_link}\n"
            f"lease-timeout {lease}, service {url}, {args.jobs} {args.system} job(s) submitted\n"
            f"run: ps1dask cutouts TABLE -o /shared/path/store.zarr --scheduler {cluster.scheduler_address}\n"
            "Ctrl-C stops the cluster and cancels its jobs.",
            flush=True,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
