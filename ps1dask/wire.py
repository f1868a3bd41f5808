"""The PS1 image service's wire format, defined once for the client and the emulator.

Pure data: URL paths, the ``ps1filenames.py`` table's columns and the skycell id syntax.
Everything here is a fact of the real service (``docs/ps1-service.md``); the client speaks
it and the emulator serves it, so a change here changes both on purpose.
"""

from __future__ import annotations

import re

__all__ = [
    "CUTOUTS_PAGE_PATH",
    "FILES_PREFIX",
    "FITSCUT_PATH",
    "LISTING_COLUMNS",
    "LIST_PATH",
    "S3_BUCKET",
    "S3_KEY_PREFIX",
    "S3_URL",
    "SKYCELL_ID_EXPECTED",
    "SKYCELL_ID_PATTERN",
    "SKYCELL_ID_RE",
]

#: Image list (GET query or POST with a ``file`` field of ``ra dec`` lines).
LIST_PATH = "/cgi-bin/ps1filenames.py"
#: Server-side cutouts (FITS, JPEG, PNG; colour from red/green/blue).
FITSCUT_PATH = "/cgi-bin/fitscut.cgi"
#: The cutout web page.
CUTOUTS_PAGE_PATH = "/cgi-bin/ps1cutouts"
#: Whole skycell files live below this path (``/rings.v3.skycell/PPPP/SSS/<shortname>``).
FILES_PREFIX = "/rings.v3.skycell/"

#: The public S3 copy of the PS1 images: bucket, and the key prefix the service's file path
#: (``/rings.v3.skycell/...``) follows, e.g.
#: ``panstarrs/ps1/public/rings.v3.skycell/1784/059/rings.v3.skycell.1784.059.stk.r.unconv.fits``.
#: Anonymous reads; the emulator serves the same keys path-style under ``/stpubdata/``.
S3_BUCKET = "stpubdata"
S3_KEY_PREFIX = "panstarrs/ps1/public"
#: ``s3://`` URL of the whole copy (``ps1dask.s3.url``'s default).
S3_URL = f"s3://{S3_BUCKET}/{S3_KEY_PREFIX}"

#: Header line of ``ps1filenames.py`` answers, in the service's column order.
LISTING_COLUMNS = (
    "projcell",
    "subcell",
    "ra",
    "dec",
    "filter",
    "mjd",
    "type",
    "filename",
    "shortname",
    "badflag",
)

#: A skycell id, ``skycell.PPPP.SSS`` or ``PPPP.SSS`` (projection cells 487..2643 have 3 or
#: 4 digits, subcells 0..99 up to 3). Unanchored, RE2-compatible (pyarrow uses it as is).
SKYCELL_ID_PATTERN = r"(?i:skycell\.)?(?P<projcell>[0-9]{3,4})\.(?P<subcell>[0-9]{1,3})"
#: :data:`SKYCELL_ID_PATTERN` for a whole string, surrounding blanks allowed.
SKYCELL_ID_RE = re.compile(rf"^\s*{SKYCELL_ID_PATTERN}\s*$")
#: What error messages say a skycell id looks like.
SKYCELL_ID_EXPECTED = "expected 'skycell.PPPP.SSS' or 'PPPP.SSS'"
