"""An interactive viewer of a store in the browser: ``ps1dask view STORE``.

A local web page (loopback by default) to browse positions, switch filters and the colour
composite, change stretch, autoscale, contrast and invert, blink through warp epochs and
look at light curves. The store is read lazily: PNGs are rendered on demand from the Zarr
store in a thread pool, never on the server's event loop.

>>> from ps1dask.viewer import Viewer
>>> with Viewer("cutouts.zarr") as viewer:      # doctest: +SKIP
...     print(viewer.url)                       # open it in a browser
"""

from ps1dask.viewer.app import Viewer, ViewerApp, ViewerState

__all__ = ["Viewer", "ViewerApp", "ViewerState"]
