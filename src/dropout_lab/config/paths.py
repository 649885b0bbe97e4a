"""Where the packaged configuration lives (package data, found with ``importlib.resources``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

#: The ``conf/`` folder shipped inside the package (train.yaml, worker.yaml and their groups).
CONF_DIR = Path(str(files("dropout_lab") / "conf"))
