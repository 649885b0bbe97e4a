"""Where the Hydra config groups (``conf/``) and the study files (``studies/``) live.

In a source checkout they are the top-level ``conf/`` and ``studies/`` folders, the ones to edit.
A built wheel carries them as package data (``dropout_lab/conf``, ``dropout_lab/studies``: a
build-time mapping in ``pyproject.toml``), used when the package is installed without its checkout.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def _folder(name: str) -> Path:
    """The packaged copy of top-level folder ``name`` if the install has one, else the checkout's."""
    packaged = Path(str(files("dropout_lab") / name))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / name


#: The Hydra config folder (train.yaml, worker.yaml and their groups).
CONF_DIR = _folder("conf")
#: The shipped study files (``DROPOUT_LAB_STUDIES`` points to another folder).
STUDIES_DIR = Path(os.environ.get("DROPOUT_LAB_STUDIES") or _folder("studies"))
