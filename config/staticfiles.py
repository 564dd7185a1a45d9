"""plotly.js, served from the installed ``plotly`` package (DESIGN §1).

The charts are drawn in the browser by plotly.js. The Python ``plotly`` package ships the matching
``plotly.min.js``; this finder offers that one file as ``vendor/plotly.min.js``, so ``runserver``
serves it and ``collectstatic`` copies it like any other static file, and the pages always load the
plotly.js of the installed package: one version, nothing vendored in the repository.
"""

from __future__ import annotations

from pathlib import Path

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_JS = "vendor/plotly.min.js"
_PACKAGE_DATA = Path(plotly.__file__).resolve().parent / "package_data"
_FILE = "plotly.min.js"


class PlotlyFinder(BaseFinder):
    """Finds ``vendor/plotly.min.js`` in the ``plotly`` package's data, and nothing else."""

    def __init__(self, *args, **kwargs) -> None:
        self.storage = FileSystemStorage(location=_PACKAGE_DATA)
        self.storage.prefix = str(Path(PLOTLY_JS).parent)
        super().__init__(*args, **kwargs)

    def check(self, **kwargs):
        if not (_PACKAGE_DATA / _FILE).is_file():
            return [
                Error(
                    f"the plotly package has no {_FILE} under {_PACKAGE_DATA}",
                    hint="reinstall plotly (pip install -c constraints.txt .)",
                    id="onramp.E001",
                )
            ]
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != PLOTLY_JS:
            return [] if find_all else None
        found = str(_PACKAGE_DATA / _FILE)
        return [found] if find_all else found

    def list(self, ignore_patterns):
        yield _FILE, self.storage
