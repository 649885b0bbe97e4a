"""Find, verify and unpack the four original Fashion-MNIST files.

Search order: the configured root, the Debian system copy (package ``dataset-fashion-mnist``),
then torchvision's download when allowed.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

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
    target = raw_folder(root)
    if not raw_file_problems(target):
        return root
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".fashion-mnist.lock")):  # workers sharing a root unpack it once
        return _ensure_locked(root, target, system_dir, download)


def _ensure_locked(root: Path, target: Path, system_dir: str | os.PathLike | None, download: bool) -> Path:
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
        f"  1. data.root={str(root)!r}: no files in {target} or {root};\n"
        f"  2. the Debian copy in {system_dir}: "
        + ("not configured" if system_dir is None else "missing")
        + " (install it as root: apt-get update && apt-get install -y dataset-fashion-mnist);\n"
        + "  3. torchvision's download: "
        + ("; ".join(errors) if errors else "disabled (set data.download=true on a connected machine)")
        + "."
    )
