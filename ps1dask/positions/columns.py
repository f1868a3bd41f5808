"""Column detection: which columns of a source hold RA, Dec, the id and a skycell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ps1dask.exceptions import InvalidParameterError
from ps1dask.positions.arguments import PYTHON_ARGUMENTS, ArgumentNames
from ps1dask.positions.sources import Source

__all__ = [
    "DEC_COLUMNS",
    "ID_COLUMNS",
    "RA_COLUMNS",
    "SKYCELL_COLUMNS",
    "Columns",
    "choose_columns",
]

#: Column names recognised (case-insensitively, in this order of preference) as RA: the usual
#: spellings, VizieR's (``RAJ2000``, ``_RAJ2000``, ``RA_ICRS``, ``RAdeg``), Gaia's
#: (``ra``), SIMBAD's (``RA_d``) and PS1's (``raMean``). Other names (``alpha``, ...) are
#: not guessed: name them.
RA_COLUMNS: tuple[str, ...] = (
    "ra",
    "raj2000",
    "ra_icrs",
    "ra_deg",
    "ramean",
    "radeg",
    "ra_d",
    "_raj2000",
    "_ra_icrs",
    "ra2000",
)
#: Column names recognised as Dec (VizieR writes ``DEJ2000``, ``DE_ICRS``, ``DEdeg``).
DEC_COLUMNS: tuple[str, ...] = (
    "dec",
    "dej2000",
    "decj2000",
    "de_icrs",
    "dec_icrs",
    "dec_deg",
    "decmean",
    "dedeg",
    "decdeg",
    "dec_d",
    "_dej2000",
    "_de_icrs",
    "de2000",
    "dec2000",
)
#: Column names recognised as the position id.
ID_COLUMNS: tuple[str, ...] = ("id", "name", "objid", "objname", "source_id")
#: Column names recognised as a skycell id (``skycell.PPPP.SSS`` or ``PPPP.SSS``).
SKYCELL_COLUMNS: tuple[str, ...] = ("skycell",)


def _find_column(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower: dict[str, list[str]] = {}
    for n in names:
        lower.setdefault(n.strip().lower(), []).append(n)
    for cand in candidates:
        found = lower.get(cand)
        if found:
            return cand if cand in found else found[0]
    return None


def _resolve_given(
    names: Sequence[str], given: str, arg: str, label: str, spell: ArgumentNames
) -> str:
    if given in names:
        return given
    match = _find_column(names, [given.strip().lower()])
    if match is None:
        raise InvalidParameterError(
            f"{label}: {spell.setting(arg, given)} is not one of its columns {list(names)}"
        )
    return match


@dataclass
class Columns:
    """The columns chosen for each role (``None``: absent)."""

    ra: str | None
    dec: str | None
    coord: str | None
    id: str | None
    skycell: str | None


def choose_columns(
    source: Source,
    ra_col: str | None,
    dec_col: str | None,
    id_col: str | Literal[False] | None,
    skycell_col: str | Literal[False] | None,
    spell: ArgumentNames = PYTHON_ARGUMENTS,
) -> Columns:
    """The RA, Dec (or SkyCoord), id and skycell columns of ``source``.

    Given names are matched exactly, then case-insensitively; absent ones are looked up in
    :data:`RA_COLUMNS`, :data:`DEC_COLUMNS`, :data:`ID_COLUMNS`, :data:`SKYCELL_COLUMNS`.
    Errors list the columns present and name the arguments as ``spell`` spells them.
    """
    names, label = source.names, source.label
    coord: str | None = None
    ra = dec = None
    if ra_col is not None:
        ra = _resolve_given(names, ra_col, "ra_col", label, spell)
        if ra in source.coords:
            coord, ra = ra, None
    if dec_col is not None:
        dec = _resolve_given(names, dec_col, "dec_col", label, spell)
        if dec in source.coords:
            if coord is not None and coord != dec:
                raise InvalidParameterError(
                    f"{label}: {spell.setting('ra_col', ra_col)} and "
                    f"{spell.setting('dec_col', dec_col)} are different SkyCoord columns"
                )
            coord, dec = dec, None
    if coord is not None:
        if ra is not None or dec is not None:
            raise InvalidParameterError(
                f"{label}: SkyCoord column {coord!r} already gives ra and dec; do not also "
                f"name a separate {spell.name('ra_col')}/{spell.name('dec_col')}"
            )
    else:
        if ra is None:
            ra = _find_column(names, RA_COLUMNS)
        if dec is None:
            dec = _find_column(names, DEC_COLUMNS)
        if ra is None and dec is None and ra_col is None and dec_col is None and source.coords:
            coord = next(iter(source.coords))
    skycell: str | None = None
    if skycell_col:
        skycell = _resolve_given(names, skycell_col, "skycell_col", label, spell)
    elif skycell_col is None:
        skycell = _find_column(names, SKYCELL_COLUMNS)
    if coord is None and (ra is None) != (dec is None):
        have, want, looked = ("ra", "dec", DEC_COLUMNS) if ra else ("dec", "ra", RA_COLUMNS)
        raise InvalidParameterError(
            f"{label}: found the {have} column {ra or dec!r} but no {want} column. Columns are "
            f"{list(names)}; looked (case-insensitively) for {want} in {list(looked)}. "
            f"Name it with {spell.setting(want + '_col')}"
        )
    if coord is None and ra is None and skycell is None:
        raise InvalidParameterError(
            f"{label}: no position columns. Columns are {list(names)}; looked "
            f"(case-insensitively) for ra in {list(RA_COLUMNS)}, dec in {list(DEC_COLUMNS)}, "
            f"a skycell column {list(SKYCELL_COLUMNS)} or a SkyCoord column. Name them with "
            f"{spell.setting('ra_col')} and {spell.setting('dec_col')} "
            f"(or {spell.setting('skycell_col')})"
        )
    ident: str | None = None
    if id_col:
        ident = _resolve_given(names, id_col, "id_col", label, spell)
    elif id_col is None:
        ident = _find_column(names, ID_COLUMNS)
    used = [c for c in (ra, dec, coord) if c is not None]
    if ident is not None and ident in used:
        raise InvalidParameterError(f"{label}: the id column {ident!r} is also a position column")
    for role, chosen in (("id_col", ident), ("skycell_col", skycell)):
        if chosen is not None and chosen in source.coords:
            raise InvalidParameterError(
                f"{label}: column {chosen!r} ({spell.name(role)}) is a SkyCoord; name it with "
                f"{spell.setting('ra_col', chosen)} (it gives ra and dec)"
            )
    return Columns(ra=ra, dec=dec, coord=coord, id=ident, skycell=skycell)
