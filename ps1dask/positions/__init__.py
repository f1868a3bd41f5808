"""Read and validate tables of sky positions (planning layer, no network).

:func:`read_positions` turns whatever the user has -- a CSV / Parquet / FITS / VOTable file,
a pandas or dask DataFrame, an astropy Table (also with ``SkyCoord`` or ``Quantity``
columns), a dict of columns -- into a :class:`PositionTable`: one row per usable position,
with a string ``id``, ``ra`` in [0, 360) and ``dec`` in [-90, 90] (J2000 degrees) and the
0-based ``row`` of the source it came from.

Coordinates may be numbers in degrees, numeric strings, or sexagesimal strings (RA in hours:
``"05 34 31.94"``, ``"05:34:31.94"``, ``"5h34m31.94s"``; Dec in degrees: ``"+22 00 52.2"``,
``"22:00:52.2"``, ``"22d00m52.2s"``), parsed vectorised (regular expressions on the string
rows only, numpy for the arithmetic) so that millions of rows read in seconds. A ``skycell``
column (``skycell.2069.026`` or ``2069.026``) stands for the centre of that skycell on rows
without RA/Dec.

The package is split along its seams: :mod:`.sources` (files and in-memory tables as
columns), :mod:`.columns` (which column is RA, Dec, id, skycell), :mod:`.values` (parsing
angles, skycells, ids), :mod:`.reader` (:func:`read_positions`) and :mod:`.table`
(:class:`PositionTable`).

Every unusable row (unparsable, missing, NaN/inf, ``|dec| > 90``, sexagesimal RA out of
range, unknown skycell, missing id) is reported at once, by 0-based row number, in ONE
:class:`~ps1dask.exceptions.InvalidPositionError`; ``skip_bad=True`` drops those rows instead
and lists them in :attr:`PositionTable.skipped`. Positions outside the PS1 footprint are
*not* errors here: a later stage gives them a status.

>>> table = read_positions({"ra": ["05 34 31.94", 83.0], "dec": ["+22 00 52.2", -5.5]})
>>> table.frame
  id         ra      dec  row
0  0  83.633083  22.0145    0
1  1  83.000000  -5.5000    1
"""

from ps1dask.positions.arguments import CLI_ARGUMENTS, PYTHON_ARGUMENTS, ArgumentNames
from ps1dask.positions.columns import DEC_COLUMNS, ID_COLUMNS, RA_COLUMNS, SKYCELL_COLUMNS
from ps1dask.positions.reader import MAX_ROWS_SHOWN, read_positions, read_table_columns
from ps1dask.positions.table import PositionSource, PositionTable

__all__ = [
    "CLI_ARGUMENTS",
    "DEC_COLUMNS",
    "ID_COLUMNS",
    "MAX_ROWS_SHOWN",
    "PYTHON_ARGUMENTS",
    "RA_COLUMNS",
    "SKYCELL_COLUMNS",
    "ArgumentNames",
    "PositionSource",
    "PositionTable",
    "read_positions",
    "read_table_columns",
]
