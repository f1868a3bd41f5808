"""Fetch strategies: server cutouts, whole skycell files, and byte-range row tiles."""
