"""moto's S3 server on loopback, an S3 implementation independent of ours (not a test
module; moto and boto3 are imported when a server starts)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def moto_s3(bucket: str, key: str, secret: str) -> Iterator[tuple[str, Any]]:
    """moto's S3 server (a thread of this process, on a free loopback port) with one empty
    ``bucket``; yields its endpoint URL and a boto3 client of it; stopped on the way out."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=bucket)
        yield endpoint, client
    finally:
        server.stop()
