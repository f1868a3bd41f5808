"""Zarr's FsspecStore (s3fs) vs ObjectStore (obstore) writing and reading a typical ps1dask
store on moto's S3 server (its own process, loopback): the measurement behind the choice in
ps1dask/storage/location.py. Run: ``python docs/measurements/store_backends.py [N]``.

Writes as the jobs do (per unit of 58 positions: open each array, image chunk, then status),
then reads chunk by chunk, the whole array at once, and times opening one array.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import boto3
import numpy as np
import requests
import zarr
from zarr.codecs import BloscCodec

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
NF, S, CHUNK = 5, 120, 58  # 5 filters, 120x120 px; position_chunk_size(5, 120, 120) = 58
KEY = {"key": "testing", "secret": "testing"}


def main() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        os.environ.update(AWS_DEFAULT_REGION="us-east-1")
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="bench")
        run(endpoint)
    finally:
        server.terminate()
        server.wait()


def run(endpoint: str) -> None:
    from obstore.store import S3Store

    def fsspec_store(prefix: str) -> zarr.abc.store.Store:
        return zarr.storage.FsspecStore.from_url(
            f"s3://bench/{prefix}", storage_options={"endpoint_url": endpoint, **KEY}
        )

    def obstore_store(prefix: str) -> zarr.abc.store.Store:
        return zarr.storage.ObjectStore(
            S3Store(
                "bench",
                prefix=prefix,
                endpoint=endpoint,
                access_key_id="testing",
                secret_access_key="testing",
                region="us-east-1",
                client_options={"allow_http": True},
            )
        )

    block = np.random.default_rng(1).normal(100, 10, (CHUNK, NF, S, S)).astype("float32")
    mb = N * NF * S * S * 4 / 1e6
    for name, make in [("fsspec", fsspec_store), ("obstore", obstore_store)] * 3:
        prefix = f"{name}-{time.time_ns()}.zarr"
        store = make(prefix)
        group = zarr.create_group(store, zarr_format=3)
        codec = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
        group.create_array(
            "flux",
            shape=(N, NF, S, S),
            chunks=(CHUNK, NF, S, S),
            dtype="float32",
            compressors=[codec],
            fill_value=np.nan,
        )
        group.create_array("status", shape=(N, NF), chunks=(CHUNK, NF), dtype="uint8")
        t0 = time.perf_counter()
        for a in range(0, N, CHUNK):
            b = min(a + CHUNK, N)
            zarr.open_array(store, path="flux", mode="r+")[a:b] = block[: b - a]
            zarr.open_array(store, path="status", mode="r+")[a:b] = 1
        write = time.perf_counter() - t0
        flux = zarr.open_array(make(prefix), path="flux", mode="r")
        t0 = time.perf_counter()
        for a in range(0, N, CHUNK):
            flux[a : min(a + CHUNK, N)]
        chunked = time.perf_counter() - t0
        t0 = time.perf_counter()
        zarr.open_array(make(prefix), path="flux", mode="r")[:]
        whole = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(200):
            zarr.open_array(store, path="status", mode="r")
        open_ms = (time.perf_counter() - t0) / 200 * 1e3
        print(
            f"{name:8s} write {N * NF / write:6.0f} cutouts/s ({mb / write:4.0f} MB/s)  "
            f"read by chunk {mb / chunked:4.0f} MB/s  whole {mb / whole:4.0f} MB/s  "
            f"open_array {open_ms:4.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
