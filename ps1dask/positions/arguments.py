"""How error messages name the arguments of :func:`read_positions` to its caller.

A Python caller writes ``ra_col="alpha"``, a shell user ``--ra-col alpha``: a message that
tells someone how to fix their input must use the spelling they type.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLI_ARGUMENTS", "PYTHON_ARGUMENTS", "ArgumentNames"]

#: The arguments of read_positions that messages refer to.
_ARGUMENTS = ("ra_col", "dec_col", "id_col", "skycell_col", "skip_bad")


@dataclass(frozen=True)
class ArgumentNames:
    """Spelling of ``read_positions``' arguments in messages.

    Attributes
    ----------
    style : {"python", "cli"}
        ``"python"``: keywords (``ra_col='alpha'``, ``skip_bad=True``); ``"cli"``: the
        options of the ``ps1dask`` commands (``--ra-col alpha``, ``--skip-bad``).
    """

    style: str = "python"

    def name(self, argument: str) -> str:
        """The bare name of ``argument`` (``ra_col`` or ``--ra-col``)."""
        if argument not in _ARGUMENTS:
            raise ValueError(f"read_positions has no argument {argument!r}")
        return f"--{argument.replace('_', '-')}" if self.style == "cli" else argument

    def setting(self, argument: str, value: object = ...) -> str:
        """How to give ``argument`` a value: ``ra_col='x'`` / ``--ra-col x``.

        Without ``value``, a placeholder (``ra_col=...`` / ``--ra-col NAME``). The flags
        ``skip_bad=True`` and ``id_col=False`` are ``--skip-bad`` and ``--no-id-col``.
        """
        if self.style == "cli":
            if argument == "skip_bad":
                return "--skip-bad"
            if argument == "id_col" and value is False:
                return "--no-id-col"
            shown = "NAME" if value is ... else str(value)
            return f"{self.name(argument)} {shown}"
        return f"{self.name(argument)}={'...' if value is ... else repr(value)}"


#: Messages for Python callers (the default).
PYTHON_ARGUMENTS = ArgumentNames("python")
#: Messages for users of the ``ps1dask`` command line.
CLI_ARGUMENTS = ArgumentNames("cli")
