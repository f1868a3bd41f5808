"""Package data: the official PS1 tessellation table ``ps1grid.csv``."""
