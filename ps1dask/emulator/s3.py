"""The emulator's S3 mode: its whole files as the public ``stpubdata`` bucket, path-style.

``GET|HEAD /stpubdata/panstarrs/ps1/public/rings.v3.skycell/PPPP/SSS/<shortname>`` answers
the same bytes as the service's ``/rings.v3.skycell/PPPP/SSS/<shortname>`` (one file cache
behind both), with what S3 sends: single ``Range`` requests (206 + ``Content-Range``, 416
``InvalidRange``), ``ETag``, ``Last-Modified``, ``Accept-Ranges``, ``x-amz-request-id``;
``NoSuchKey`` / ``NoSuchBucket`` errors in S3's XML; a minimal ``ListObjectsV2``
(``list-type=2``: ``prefix``, ``delimiter=/``, ``max-keys`` <= 1000, ``start-after``,
``continuation-token``); ``HEAD /stpubdata`` and ``?location``. Signatures are not checked:
anonymous and SigV4-signed requests are answered alike.

Bucket and key prefix are :data:`ps1dask.wire.S3_BUCKET` and :data:`~ps1dask.wire.S3_KEY_PREFIX`.
The ``s3_missing_fraction`` knob hides a fixed, hash-chosen part of the keys
(:func:`~ps1dask.emulator.faults.s3_key_missing`). Latency, bandwidth and faults apply as to
the service (in XML: 503 ``SlowDown``, 500 ``InternalError``); the per-address limit does not,
and the requests are counted apart, under ``s3`` in ``/_emulator/metrics``.

Listing sizes are exact and, like a HEAD's, computed from the files' headers: a listing
renders nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import quote
from xml.sax.saxutils import escape

from aiohttp import web

from ps1dask.emulator.faults import s3_key_missing
from ps1dask.emulator.files import WholeFileCache
from ps1dask.emulator.metrics import SERVICE_SEGMENTS, ServiceState
from ps1dask.emulator.params import parse_byte_range
from ps1dask.emulator.replies import Reply
from ps1dask.emulator.service_rules import FILTERS, STACK_SUFFIXES, WARP_SUFFIXES
from ps1dask.emulator.sky import ImageRef, SyntheticSky
from ps1dask.exceptions import HTTPFailure, PS1DaskError
from ps1dask.tessellation import FIRST_FOOTPRINT_PROJCELL, SkycellId, load_grid
from ps1dask.wire import FILES_PREFIX, S3_BUCKET, S3_KEY_PREFIX

__all__ = ["FileService", "S3Bucket", "s3_error_reply"]

T = TypeVar("T")


class FileService(Protocol):
    """What the S3 mode uses of :class:`~ps1dask.emulator.service.Service` (which builds it:
    a protocol, not an import, keeps the modules free of cycles)."""

    sky: SyntheticSky
    state: ServiceState
    cache: WholeFileCache

    def lookup(self, name: str) -> ImageRef: ...

    def listed_images(
        self, skycell: SkycellId, bands: str, types: tuple[str, ...]
    ) -> tuple[ImageRef, ...]: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def open_file(self, ref: ImageRef, head: bool) -> tuple[BinaryIO | None, int]: ...


XML_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: The DR2 release date, as the service's files say too.
LAST_MODIFIED_HTTP = "Mon, 28 Jan 2019 00:00:00 GMT"
LAST_MODIFIED_ISO = "2019-01-28T00:00:00.000Z"
#: What S3 answers for objects stored without a content type.
OBJECT_CONTENT_TYPE = "binary/octet-stream"
MAX_KEYS = 1000
#: Keys whose image is remembered (a few MB at most).
KNOWN_KEYS = 16384
#: Skycells one listing page may look into (a prefix with few or no keys left, e.g. at
#: ``s3_missing_fraction=1``, must not walk the whole sky in one request).
SKYCELLS_PER_LIST_PAGE = 200
#: Keys below this are files: ``<prefix>/rings.v3.skycell/PPPP/SSS/<shortname>``.
FILES_KEY_PREFIX = f"{S3_KEY_PREFIX}{FILES_PREFIX}"
_ALL_TYPES = tuple(STACK_SUFFIXES) + tuple(WARP_SUFFIXES)
_request_ids = itertools.count(1)


def _amz_headers() -> dict[str, str]:
    n = next(_request_ids)
    return {
        "x-amz-request-id": f"{n:016X}",
        "x-amz-id-2": base64.b64encode(hashlib.sha256(str(n).encode()).digest()).decode(),
        "Server": "AmazonS3",
    }


def s3_error_reply(
    status: int, code: str, message: str, extra: dict[str, str] | None = None
) -> Reply:
    """An S3 error answer: ``<Error><Code>...`` XML (a HEAD gets the headers only)."""
    headers = _amz_headers()
    fields = {"Code": code, "Message": message, **(extra or {})}
    fields["RequestId"] = headers["x-amz-request-id"]
    fields["HostId"] = headers["x-amz-id-2"]
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>'
    return Reply(status, {"Content-Type": "application/xml", **headers}, text.encode("utf-8"))


def _xml_reply(root: str, inner: str) -> Reply:
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XML_NS}">{inner}</{root}>'
    return Reply(200, {"Content-Type": "application/xml", **_amz_headers()}, text.encode("utf-8"))


def object_etag(seed: int, ref: ImageRef, size: int) -> str:
    """The quoted ETag of a file: S3's 32 hex digits, fixed by the file (not its bytes' MD5:
    S3 ETags of multipart uploads are not either, so clients may not assume it)."""
    return '"' + hashlib.md5(f"{seed}:{ref.filename}:{size}".encode()).hexdigest() + '"'


def _last_projcell() -> int:
    grid = load_grid()
    return int(grid.projcell[-1] + grid.nband[-1] - 1)


class _StopWalk(Exception):
    """The walk looked into as many skycells as one page may."""


class _KeyTree:
    """The bucket's keys as a tree of ``/``-separated directories, walked in key order.

    Directories cost nothing to list; a skycell's files come from the sky's listing (no
    pixels). Missing keys (``s3_missing_fraction``) are left out.
    """

    def __init__(self, service: FileService, missing_fraction: float) -> None:
        self.service = service
        self.missing_fraction = missing_fraction
        parts = FILES_KEY_PREFIX.rstrip("/").split("/")
        self._static = {
            "/".join(parts[:i]) + ("/" if i else ""): parts[i] + "/" for i in range(len(parts))
        }
        self._projcells = range(FIRST_FOOTPRINT_PROJCELL, _last_projcell() + 1)
        self.skycells_visited = 0
        #: set when the walk stopped at :data:`SKYCELLS_PER_LIST_PAGE`: resume after this
        self.resume_after: str | None = None

    def children(self, directory: str) -> list[tuple[str, ImageRef | None]]:
        """``(name, ref)`` below ``directory`` in key order; ref None for a subdirectory."""
        if directory in self._static:
            return [(self._static[directory], None)]
        if not directory.startswith(FILES_KEY_PREFIX):
            return []
        rest = directory[len(FILES_KEY_PREFIX) :].split("/")[:-1]
        if not rest:
            return [(f"{p:04d}/", None) for p in self._projcells]
        if len(rest) == 1:
            return [(f"{s:03d}/", None) for s in range(100)]
        if len(rest) != 2:
            return []
        try:
            sid = SkycellId.parse((int(rest[0]), int(rest[1])))
        except (PS1DaskError, ValueError):
            return []
        self.skycells_visited += 1
        refs = self.service.listed_images(sid, FILTERS, _ALL_TYPES)
        names = sorted((r.filename.rsplit("/", 1)[-1], r) for r in refs)
        return [
            (name, ref)
            for name, ref in names
            if not s3_key_missing(directory + name, self.missing_fraction)
        ]

    def walk(
        self, prefix: str, delimiter: str, after: str
    ) -> Iterator[tuple[str, ImageRef | None]]:
        """Keys (with their ref) and common prefixes (ref None) after ``after``, in order."""

        def visit(directory: str) -> Iterator[tuple[str, ImageRef | None]]:
            is_skycell = directory.count("/") == FILES_KEY_PREFIX.count("/") + 2
            if is_skycell and self.skycells_visited >= SKYCELLS_PER_LIST_PAGE:
                self.resume_after = directory  # every key before it is done
                raise _StopWalk
            for name, ref in self.children(directory):
                full = directory + name
                if not (full.startswith(prefix) or (ref is None and prefix.startswith(full))):
                    continue
                if full <= after and not (ref is None and after.startswith(full)):
                    continue  # this key, or every key below this directory, is done
                if ref is not None:
                    yield full, ref
                elif delimiter and full.startswith(prefix) and len(full) > len(prefix):
                    if full > after or (full != after and after.startswith(full)):
                        yield full, None  # a common prefix: nothing below it is listed
                else:
                    yield from visit(full)

        try:
            yield from visit("")
        except _StopWalk:
            return


class S3Bucket:
    """Handlers of the S3 mode, over one service's files (:class:`FileService`)."""

    def __init__(self, service: FileService) -> None:
        self.service = service
        #: key -> image of keys found (event loop only; the oldest go first past the bound)
        self._known_keys: dict[str, ImageRef] = {}

    async def handle(self, request: web.Request) -> Reply:
        bucket = request.match_info["bucket"]
        key = request.match_info.get("key", "")
        if request.method not in ("GET", "HEAD"):
            reply = s3_error_reply(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource (the emulated "
                "public bucket is read-only).",
                {"Method": request.method, "ResourceType": "OBJECT" if key else "BUCKET"},
            )
            reply.close_connection = True  # any body was not read
            return reply
        if bucket != S3_BUCKET:
            return s3_error_reply(
                404, "NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket}
            )
        if key:
            return await self.get_object(request, key)
        query = request.query
        if "location" in query:
            return _xml_reply("LocationConstraint", "")  # empty: us-east-1
        if request.method == "HEAD":
            reply = Reply(200, {**_amz_headers(), "x-amz-bucket-region": "us-east-1"})
            reply.head_only = True
            return reply
        if query.get("list-type") != "2":
            return s3_error_reply(
                501,
                "NotImplemented",
                "The emulated bucket lists with ListObjectsV2 only (list-type=2).",
            )
        return await self.list_objects(request)

    # ----- objects ------------------------------------------------------------------------

    def _ref(self, key: str) -> ImageRef | None:
        """The image a key names, or None if the service has no such file (thread pool)."""
        if not key.startswith(FILES_KEY_PREFIX):
            return None
        try:
            return self.service.lookup("/" + key[len(S3_KEY_PREFIX) :].lstrip("/"))
        except HTTPFailure:
            return None

    async def get_object(self, request: web.Request, key: str) -> Reply:
        service = self.service
        ref = None
        if not s3_key_missing(key, service.state.knobs.s3_missing_fraction):
            # Range reads come by the thousand: keys once found skip the thread pool.
            ref = self._known_keys.get(key)
            if ref is None:
                ref = await service.run(self._ref, key)
                if ref is not None:
                    if len(self._known_keys) >= KNOWN_KEYS:
                        self._known_keys.pop(next(iter(self._known_keys)))
                    self._known_keys[key] = ref
        if ref is None:
            return s3_error_reply(
                404, "NoSuchKey", "The specified key does not exist.", {"Key": key}
            )
        head = request.method == "HEAD"
        fh, size = await service.open_file(ref, head)
        try:
            return self._object_reply(request, ref, fh, size)
        except BaseException:
            if fh is not None:
                fh.close()
            raise

    def _object_reply(
        self, request: web.Request, ref: ImageRef, fh: BinaryIO | None, size: int
    ) -> Reply:
        etag = object_etag(self.service.sky.seed, ref, size)
        headers = {
            **_amz_headers(),
            "Content-Type": OBJECT_CONTENT_TYPE,
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": LAST_MODIFIED_HTTP,
        }
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", etag):
            self._close(fh)
            return s3_error_reply(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                {"Condition": "If-Match"},
            )
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and if_none_match.strip() in ("*", etag):
            self._close(fh)
            reply = Reply(304, {k: v for k, v in headers.items() if k != "Content-Type"})
            reply.head_only = True
            return reply
        start, end, status = 0, size - 1, 200
        spec = request.headers.get("Range")
        if spec is not None:
            self.service.state.metrics.add("range_requests", s3=True)
            try:
                byte_range = parse_byte_range(spec, size)
            except HTTPFailure:
                self._close(fh)
                return s3_error_reply(
                    416,
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    {"RangeRequested": spec, "ActualObjectSize": str(size)},
                )
            if byte_range is not None:  # None: malformed, ignored (the whole object)
                start, end = byte_range
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                status = 206
        return Reply(
            status, headers, file=fh, offset=start, length=end - start + 1, head_only=fh is None
        )

    @staticmethod
    def _close(fh: BinaryIO | None) -> None:
        if fh is not None:
            fh.close()

    # ----- ListObjectsV2 ------------------------------------------------------------------

    async def list_objects(self, request: web.Request) -> Reply:
        query = request.query
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        if delimiter not in ("", "/"):
            return s3_error_reply(
                501, "NotImplemented", "The emulated bucket lists with delimiter '/' only."
            )
        raw_max = query.get("max-keys", str(MAX_KEYS))
        try:
            max_keys = int(raw_max)
            if max_keys < 0:
                raise ValueError
        except ValueError:
            return s3_error_reply(
                400,
                "InvalidArgument",
                "Provided max-keys not an integer or within integer range",
                {"ArgumentName": "max-keys", "ArgumentValue": raw_max},
            )
        max_keys = min(max_keys, MAX_KEYS)
        token = query.get("continuation-token")
        start_after = query.get("start-after", "")
        after = start_after
        if token is not None:
            try:
                raw = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True)
                after = raw.decode("utf-8")
            except (binascii.Error, UnicodeError, ValueError):
                return s3_error_reply(
                    400,
                    "InvalidArgument",
                    "The continuation token provided is incorrect",
                    {"ArgumentName": "continuation-token"},
                )
        service = self.service
        tree = _KeyTree(service, service.state.knobs.s3_missing_fraction)
        found = await service.run(
            lambda: list(itertools.islice(tree.walk(prefix, delimiter, after), max_keys + 1))
        )
        truncated = len(found) > max_keys > 0  # max-keys=0: nothing to resume
        found = found[:max_keys]
        resume_after = None if truncated else tree.resume_after
        sizes = await service.run(
            lambda: [0 if ref is None else service.cache.size(ref) for _, ref in found]
        )
        listed = [(name, ref, size) for (name, ref), size in zip(found, sizes, strict=True)]
        parts = [f"<Name>{S3_BUCKET}</Name>", f"<Prefix>{escape(prefix)}</Prefix>"]
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        url_encoded = query.get("encoding-type") == "url"
        if url_encoded:
            parts.append("<EncodingType>url</EncodingType>")
        parts += [
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<KeyCount>{len(listed)}</KeyCount>",
        ]
        if token is not None:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if start_after:
            parts.append(f"<StartAfter>{escape(start_after)}</StartAfter>")
        if resume_after is not None:  # stopped at the skycell budget: more may follow
            truncated = True
        next_after = (
            resume_after if resume_after is not None else (listed[-1][0] if listed else None)
        )
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated and next_after is not None:
            token_out = base64.urlsafe_b64encode(next_after.encode("utf-8")).decode("ascii")
            parts.append(f"<NextContinuationToken>{token_out}</NextContinuationToken>")

        def text(value: str) -> str:
            return escape(quote(value, safe="/") if url_encoded else value)

        seed = service.sky.seed
        for name, ref, size in listed:
            if ref is None:
                parts.append(f"<CommonPrefixes><Prefix>{text(name)}</Prefix></CommonPrefixes>")
            else:
                parts.append(
                    f"<Contents><Key>{text(name)}</Key>"
                    f"<LastModified>{LAST_MODIFIED_ISO}</LastModified>"
                    f"<ETag>{escape(object_etag(seed, ref, size))}</ETag>"
                    f"<Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
                )
        return _xml_reply("ListBucketResult", "".join(parts))


def bucket_route_pattern() -> str:
    """aiohttp path of the S3 routes' bucket segment: any first segment but the service's."""
    names = "|".join(sorted(re.escape(s) for s in SERVICE_SEGMENTS if s))
    return rf"{{bucket:(?!(?:{names})(?:/|$))[^/]+}}"
