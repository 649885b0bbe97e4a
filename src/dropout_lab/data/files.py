"""Find, verify, unpack and read the four original Fashion-MNIST files.

With ``data.root`` set (or ``DROPOUT_LAB_DATA``), that folder holds the unpacked files: found there,
unpacked there from its own ``.gz`` files or the Debian system copy (package ``dataset-fashion-mnist``),
or downloaded there by torchvision when allowed. Without it, the Debian copy is read in place, or else
the files are unpacked (or downloaded) once into the per-user cache; never into the working folder.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from pathlib import Path

import torch
from filelock import FileLock
from torchvision.datasets import FashionMNIST
from torchvision.datasets.utils import calculate_md5, extract_archive

from dropout_lab.errors import DataNotFoundError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Size in bytes and MD5 of each unpacked IDX file. Checking the unpacked bytes (not the ``.gz``)
#: accepts any faithful re-compression, such as Debian's, and catches truncation or corruption.
RAW_FILES = {
    "train-images-idx3-ubyte": (16 + 60000 * 28 * 28, "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": (8 + 60000, "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": (16 + 10000 * 28 * 28, "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": (8 + 10000, "15d484375f8d13e6eb1aabb0c3f46965"),
}
GZ_NAMES = [f"{name}.gz" for name in RAW_FILES]


def user_cache_dir() -> Path:
    """The per-user data cache: ``$XDG_CACHE_HOME/dropout-lab``, else ``~/.cache/dropout-lab``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "dropout-lab"


def has_gz_files(folder: Path) -> bool:
    """True if ``folder`` holds the four original ``.gz`` files (not yet verified)."""
    return all((Path(folder) / name).is_file() for name in GZ_NAMES)


def raw_folder(root: Path) -> Path:
    """Folder where torchvision's ``FashionMNIST(root)`` reads the unpacked files."""
    return Path(root) / "FashionMNIST" / "raw"


def raw_file_problems(folder: Path) -> dict[str, str]:
    """Unpacked files that are missing or corrupt, each with what is wrong (empty when all are good)."""
    problems = {}
    for name, (size, md5) in RAW_FILES.items():
        path = folder / name
        if not path.is_file():
            problems[name] = "missing"
        elif path.stat().st_size != size:
            problems[name] = f"{path} has {path.stat().st_size} bytes, expected {size}"
        elif _md5(path) != md5:
            problems[name] = f"{path} has the right size but its MD5 is not {md5}"
    return problems


@functools.lru_cache(maxsize=64)
def _md5_cached(path: str, identity: str) -> str:
    return calculate_md5(path)


def _stamp(path: Path) -> str:
    """What identifies this version of the file: size, inode, mtime and ctime (ctime cannot be set back)."""
    st = path.stat()
    return f"{st.st_size} {st.st_ino} {st.st_mtime_ns} {st.st_ctime_ns}"


def _md5(path: Path) -> str:
    """MD5 of a file, computed once per unchanged file.

    Within a process the result is cached; across processes a ``<file>.md5`` stamp next to it
    records the MD5 with the file's size, inode, mtime and ctime, so that a study's many runs do not
    re-hash 55 MB each (about 0.1 s a run). Any write, replacement or ``touch`` changes the stamp.
    """
    stamp_file = path.with_name(path.name + ".md5")
    identity = _stamp(path)
    try:
        recorded_identity, recorded_md5 = stamp_file.read_text().rsplit(" ", 1)
        if recorded_identity == identity:
            return recorded_md5
    except (OSError, ValueError):
        pass
    md5 = _md5_cached(str(path), identity)
    try:
        tmp = stamp_file.with_name(f"{stamp_file.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{identity} {md5}")
        os.replace(tmp, stamp_file)
    except OSError:  # a read-only data folder: hash again next time
        pass
    return md5


def _unpack_from(source: Path, target: Path) -> None:
    """Unpack the four ``.gz`` files of ``source`` into ``target`` atomically and verify them."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".unpack-") as tmp:
        for gz_name in GZ_NAMES:
            extract_archive(str(source / gz_name), tmp)
        for name in RAW_FILES:
            os.replace(Path(tmp) / name, target / name)
    problems = raw_file_problems(target)
    if problems:
        for name in problems:
            (target / name).unlink(missing_ok=True)
        raise DataNotFoundError(
            f"Fashion-MNIST in {source} is corrupt: "
            + "; ".join(f"{name}.gz unpacks to a bad file ({why})" for name, why in problems.items())
            + ". Reinstall it (apt-get install --reinstall dataset-fashion-mnist) or replace the file."
        )


def ensure_fashion_mnist(root: str | os.PathLike, system_dir: str | os.PathLike | None = SYSTEM_DIR,
                         download: bool = True) -> Path:
    """Make sure ``root`` holds verified, unpacked Fashion-MNIST files and return ``root``.

    Raises :class:`DataNotFoundError` naming every remedy if no source works, or naming the
    file if one is corrupt.
    """
    root = Path(root)
    return _ensure(root, system_dir, download, f"data.root={str(root)!r}: no files in {raw_folder(root)} or {root}")


def locate_fashion_mnist(root: str | os.PathLike | None, system_dir: str | os.PathLike | None = SYSTEM_DIR,
                         download: bool = True) -> Path:
    """The data location to read (:func:`read_fashion_mnist`), made ready; nothing goes to the working folder.

    An explicit ``root`` (``data.root``, ``DROPOUT_LAB_DATA``) is made ready by :func:`ensure_fashion_mnist`.
    Without one (None or empty), the Debian copy in ``system_dir`` is read in place if it has the four
    ``.gz`` files; otherwise they are unpacked (or downloaded) once into :func:`user_cache_dir`.
    """
    if root:
        return ensure_fashion_mnist(Path(root).expanduser(), system_dir, download)
    if system_dir is not None and has_gz_files(Path(system_dir)):
        return Path(system_dir)
    cache = user_cache_dir()
    return _ensure(cache, system_dir, download, "data.root is not set (nor DROPOUT_LAB_DATA), and the per-user "
                   f"cache has no files in {raw_folder(cache)}; set data.root=FOLDER for a copy of your own")


def _ensure(root: Path, system_dir: str | os.PathLike | None, download: bool, first_try: str) -> Path:
    """:func:`ensure_fashion_mnist`, with ``first_try`` saying what ``root`` is in the not-found message."""
    target = raw_folder(root)
    if not raw_file_problems(target):
        return root
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".fashion-mnist.lock")):  # workers sharing a root unpack it once
        return _ensure_locked(root, target, system_dir, download, first_try)


def _ensure_locked(root: Path, target: Path, system_dir: str | os.PathLike | None, download: bool,
                   first_try: str) -> Path:
    problems = raw_file_problems(target)
    if not problems:
        return root
    corrupt = {name: why for name, why in problems.items() if why != "missing"}
    if corrupt:
        raise DataNotFoundError(
            "Fashion-MNIST is corrupt: " + "; ".join(corrupt.values()) + ". Delete the file(s) and rerun."
        )
    # The configured root may hold the original .gz files; then the Debian copy.
    sources = [root, target] + ([Path(system_dir)] if system_dir is not None else [])
    for source in sources:
        if all((source / name).is_file() for name in GZ_NAMES):
            _unpack_from(source, target)
            return root
    errors = []
    if download:
        try:
            FashionMNIST(str(root), train=True, download=True)
            FashionMNIST(str(root), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            errors.append(f"download failed: {exc}")
        else:
            if not raw_file_problems(target):
                return root
    raise DataNotFoundError(
        "Fashion-MNIST not found. Tried, in order:\n"
        f"  1. {first_try};\n"
        f"  2. the Debian copy in {system_dir}: "
        + ("not configured" if system_dir is None else "missing")
        + " (install it as root: apt-get update && apt-get install -y dataset-fashion-mnist);\n"
        + "  3. torchvision's download: "
        + ("; ".join(errors) if errors else "disabled (set data.download=true on a connected machine)")
        + "."
    )


def read_fashion_mnist(location: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Images (uint8, N x 28 x 28) and labels (uint8, N) of the ``train`` and ``test`` splits.

    ``location`` is what :func:`locate_fashion_mnist` returns: a root whose :func:`raw_folder` holds
    the unpacked files, or else a folder holding the four ``.gz`` files, read in place. The bytes
    read are verified (size and MD5) before they are parsed.
    """
    location = Path(location)
    folder = raw_folder(location)
    unpacked = all((folder / name).is_file() for name in RAW_FILES)
    if not unpacked and not has_gz_files(location):
        raise DataNotFoundError(f"Fashion-MNIST not found in {location}: neither the unpacked files in {folder} "
                                f"nor the four .gz files ({', '.join(GZ_NAMES)}) in {location}")
    arrays = {name: _idx_tensor(_verified_bytes(folder / name if unpacked else location / f"{name}.gz", name))
              for name in RAW_FILES}
    return {split: (arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"])
            for split, prefix in (("train", "train"), ("test", "t10k"))}


def _verified_bytes(path: Path, name: str) -> bytearray:
    """The bytes of IDX file ``name`` from ``path`` (unpacked in memory if it is a ``.gz``), checked by size and MD5."""
    size, md5 = RAW_FILES[name]
    remedy = ("replace it (Debian's copy: apt-get install --reinstall dataset-fashion-mnist) or set data.root to a "
              "folder of good files" if path.suffix == ".gz" else "delete it and rerun to unpack or download it again")
    try:
        with (gzip.open(path) if path.suffix == ".gz" else path.open("rb")) as f:
            data = bytearray(f.read(size + 1))  # one byte more than expected reveals a longer file
    except (OSError, EOFError, zlib.error) as exc:
        raise DataNotFoundError(f"Fashion-MNIST file {path} cannot be read ({exc}): {remedy}") from None
    if len(data) != size:
        found = f"{len(data)} bytes" if len(data) < size else f"more than {size} bytes"
        raise DataNotFoundError(f"Fashion-MNIST file {path} holds {found} of {name}, expected {size}: {remedy}")
    if hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        raise DataNotFoundError(f"Fashion-MNIST file {path} has the right size but the MD5 of {name} is not {md5}: "
                                f"{remedy}")
    return data


def _idx_tensor(data: bytearray) -> torch.Tensor:
    """An IDX file's unsigned bytes as a tensor of the shape its header gives (verified data: no checks)."""
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return torch.frombuffer(data, dtype=torch.uint8, offset=4 + 4 * ndim).view(*shape)
