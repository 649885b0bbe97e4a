"""Real Fashion-MNIST files: found, verified, split honestly, and clear errors when missing or corrupt."""

import gzip
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from dropout_lab.config.compose import compose_train_config
from dropout_lab.data import FashionMNISTDataModule, ensure_fashion_mnist
from dropout_lab.data.batches import MemberBatches
from dropout_lab.data.files import (
    GZ_NAMES,
    RAW_FILES,
    SYSTEM_DIR,
    locate_fashion_mnist,
    raw_folder,
    read_fashion_mnist,
    user_cache_dir,
)
from dropout_lab.errors import DataNotFoundError, InvalidValueError

needs_debian_copy = pytest.mark.skipif(not all((SYSTEM_DIR / n).is_file() for n in GZ_NAMES),
                                       reason=f"no Debian copy in {SYSTEM_DIR} (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def no_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (returned), no ``DROPOUT_LAB_DATA``, and the per-user cache in ``tmp_path/cache``."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("DROPOUT_LAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return work


def _splits(data_root: Path, **kwargs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    dm = FashionMNISTDataModule(root=str(data_root), download=False, **kwargs)
    dm.setup("fit")
    return dm.splits


def test_validation_is_held_out_of_training_images(data_root: Path) -> None:
    splits = _splits(data_root, val_size=10_000)
    (xtr, ytr), (xva, yva), (_, yte) = splits["train"], splits["val"], splits["test"]
    assert (len(ytr), len(yva), len(yte)) == (50_000, 10_000, 10_000)
    assert xtr.dtype == torch.float32 and 0.0 <= xtr.min() and xtr.max() <= 1.0
    # No validation image is also a training image (compare exact pixel rows via hashing).
    train_rows = {hash(row.numpy().tobytes()) for row in xtr[:, 0].flatten(1)}
    overlap = sum(hash(row.numpy().tobytes()) in train_rows for row in xva[:500, 0].flatten(1))
    assert overlap <= 2  # Fashion-MNIST has a handful of exact duplicate images
    assert set(yva.tolist()) == set(range(10))


def test_split_is_fixed_by_split_seed(data_root: Path) -> None:
    a = _splits(data_root, split_seed=0)["val"][1]
    b = _splits(data_root, split_seed=0)["val"][1]
    c = _splits(data_root, split_seed=1)["val"][1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_book_mode_validates_on_the_test_set(data_root: Path) -> None:
    splits = _splits(data_root, validate_on_test=True)
    assert len(splits["train"][1]) == 60_000
    assert torch.equal(splits["val"][1], splits["test"][1])


def test_batches_cover_the_split_once_in_a_seeded_order(data_root: Path) -> None:
    dm = FashionMNISTDataModule(root=str(data_root), download=False, train_subset=1000, batch_size=256,
                                batches_per_call=1)
    dm.setup("fit")
    batches = [batch for group in dm.train_dataloader() for batch in group]  # one run: member 0 of [1, b, ...]
    assert [tuple(y.shape) for _, y in batches] == [(1, 256), (1, 256), (1, 256), (1, 232)]
    labels = torch.cat([y[0] for _, y in batches])
    assert torch.equal(labels.sort().values, dm.splits["train"][1].sort().values)
    assert not torch.equal(labels, dm.splits["train"][1])  # shuffled


def test_grouped_batches_are_the_same_batches_in_the_same_order(data_root: Path) -> None:
    def passes(per_call: int) -> list[list]:
        dm = FashionMNISTDataModule(root=str(data_root), download=False, train_subset=1000, batch_size=256,
                                    batches_per_call=per_call)
        dm.setup("fit")
        loader = dm.train_dataloader()
        return [[list(group) for group in loader] for _ in range(2)]  # two epochs: two permutations

    plain, grouped = passes(1), passes(3)
    assert [len(group) for group in grouped[0]] == [3, 1] and [len(group) for group in plain[0]] == [1] * 4
    for plain_epoch, grouped_epoch in zip(plain, grouped):
        flat = [batch for group in grouped_epoch for batch in group]
        assert len(flat) == 4
        for (X1, y1), (X2, y2) in zip([batch for group in plain_epoch for batch in group], flat):
            assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(plain[0][0][0][1], plain[1][0][0][1])  # each epoch draws a new order


def test_shuffled_batches_hold_the_indexed_images(data_root: Path) -> None:
    X, y = _splits(data_root, train_subset=1000)["train"]
    first_images, first_labels = next(iter(next(iter(MemberBatches(X, y, 256, [4])))))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(4))[:256]  # member seed 4's first batch
    assert not torch.equal(idx, torch.arange(256))
    assert torch.equal(first_images[0], X[idx]) and torch.equal(first_labels[0], y[idx])


def test_missing_data_names_all_three_remedies(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        ensure_fashion_mnist(tmp_path / "empty", system_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "data.root" in message and "apt-get install -y dataset-fashion-mnist" in message
    assert "data.download=true" in message


@needs_debian_copy
def test_without_a_root_the_debian_copy_is_read_in_place(no_root: Path, data_root: Path) -> None:
    cfg = compose_train_config([]).data
    assert cfg.root is None and cfg.system_dir == str(SYSTEM_DIR)
    dm = FashionMNISTDataModule(root=cfg.root, system_dir=cfg.system_dir, download=False, validate_on_test=True)
    dm.setup("fit")
    unpacked = _splits(data_root, validate_on_test=True)
    for split, size in (("train", 60_000), ("test", 10_000)):
        (x, y), (ux, uy) = dm.splits[split], unpacked[split]
        assert len(y) == size and torch.equal(x, ux) and torch.equal(y, uy)
    assert locate_fashion_mnist(None, download=False) == SYSTEM_DIR
    assert list(no_root.iterdir()) == [] and not user_cache_dir().exists()  # no data/, nothing unpacked


def test_without_a_root_or_debian_copy_the_user_cache_is_used(no_root: Path, data_root: Path, tmp_path: Path) -> None:
    assert user_cache_dir() == tmp_path / "cache" / "dropout-lab"
    with pytest.raises(DataNotFoundError) as info:
        locate_fashion_mnist(None, system_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert f"data.root is not set (nor DROPOUT_LAB_DATA), and the per-user cache has no files in " \
           f"{raw_folder(user_cache_dir())}" in message
    assert "apt-get install -y dataset-fashion-mnist" in message and "data.download=true" in message
    shutil.copytree(raw_folder(data_root), raw_folder(user_cache_dir()))  # as a download would leave it
    location = locate_fashion_mnist(None, system_dir=tmp_path / "nowhere", download=False)
    assert location == user_cache_dir()
    assert [len(y) for _, y in read_fashion_mnist(location).values()] == [60_000, 10_000]
    assert list(no_root.iterdir()) == []


def test_the_user_cache_ignores_a_relative_xdg_cache_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec: only absolute paths count
    assert user_cache_dir() == Path.home() / ".cache" / "dropout-lab"


@needs_debian_copy
def test_a_corrupt_gz_read_in_place_is_named(tmp_path: Path) -> None:
    copy = tmp_path / "gz"
    copy.mkdir()
    for gz in GZ_NAMES:
        (copy / gz).symlink_to(SYSTEM_DIR / gz)
    labels = copy / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[100] = (data[100] + 1) % 10
    labels.unlink()
    labels.write_bytes(gzip.compress(bytes(data)))
    assert locate_fashion_mnist(None, system_dir=copy, download=False) == copy
    name = re.escape(str(labels))
    with pytest.raises(DataNotFoundError, match=rf"{name} has the right size but the MD5 of train-labels-idx1-ubyte"):
        read_fashion_mnist(copy)
    labels.write_bytes(gzip.compress(bytes(data))[:-20])  # a cut-short download
    with pytest.raises(DataNotFoundError, match=rf"Fashion-MNIST file {name} cannot be read .*reinstall"):
        read_fashion_mnist(copy)
    labels.write_bytes(gzip.compress(bytes(data[:-10])))
    short = rf"{name} holds 59998 bytes of train-labels-idx1-ubyte, expected 60008"
    with pytest.raises(DataNotFoundError, match=short):
        read_fashion_mnist(copy)


def test_truncated_file_is_named(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(raw_folder(data_root), raw_folder(root))
    bad = raw_folder(root) / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte has 9998 bytes, expected 10008"):
        ensure_fashion_mnist(root, system_dir=None, download=False)


def test_corrupt_bytes_of_right_size_are_caught_by_checksum(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(raw_folder(data_root), raw_folder(root))
    bad = raw_folder(root) / "train-labels-idx1-ubyte"
    data = bytearray(bad.read_bytes())
    data[100] = (data[100] + 1) % 10
    bad.write_bytes(bytes(data))
    with pytest.raises(DataNotFoundError, match=r"train-labels-idx1-ubyte has the right size but its MD5"):
        ensure_fashion_mnist(root, system_dir=None, download=False)


def test_root_holding_the_gz_files_is_unpacked(tmp_path: Path) -> None:
    from dropout_lab.data.files import SYSTEM_DIR

    if not SYSTEM_DIR.is_dir():
        pytest.skip("the Debian copy is the only .gz source on this machine")
    root = tmp_path / "gz"
    root.mkdir()
    for name in RAW_FILES:
        shutil.copy(SYSTEM_DIR / f"{name}.gz", root)
    ensure_fashion_mnist(root, system_dir=None, download=False)
    assert all((raw_folder(root) / name).is_file() for name in RAW_FILES)


def test_bad_split_values_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="data.batch_size=0"):
        FashionMNISTDataModule(batch_size=0)
    with pytest.raises(InvalidValueError, match=r"data.batches_per_call=0 is invalid: allowed an integer >= 1"):
        FashionMNISTDataModule(batches_per_call=0)
    with pytest.raises(InvalidValueError, match="data.val_size=60000"):
        FashionMNISTDataModule(val_size=60_000)


def test_recorded_checksum_does_not_hide_a_later_corruption(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(raw_folder(data_root), raw_folder(root))
    ensure_fashion_mnist(root, system_dir=None, download=False)  # verifies and records the MD5 stamps
    bad = raw_folder(root) / "train-labels-idx1-ubyte"
    assert bad.with_name(bad.name + ".md5").read_text().endswith(RAW_FILES[bad.name][1])
    before = bad.stat()
    data = bytearray(bad.read_bytes())
    data[100] = (data[100] + 1) % 10
    bad.write_bytes(bytes(data))
    os.utime(bad, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime as the good file
    with pytest.raises(DataNotFoundError, match=r"train-labels-idx1-ubyte has the right size but its MD5"):
        ensure_fashion_mnist(root, system_dir=None, download=False)


def test_a_split_per_seed_follows_each_runs_seed_and_a_fixed_one_does_not(data_root: Path) -> None:
    per_seed = FashionMNISTDataModule(root=str(data_root), download=False, split="per_seed")
    per_seed.seeds = [0, 1]
    (train0, val0), (train1, val1) = per_seed.member_splits()
    assert set(val0.tolist()) != set(val1.tolist()) and len(val0) == len(val1) == 10_000
    for train, val in ((train0, val0), (train1, val1)):  # each member's validation rows are held out of its training
        assert len(train) == 50_000 and not set(train.tolist()) & set(val.tolist())
    fixed = FashionMNISTDataModule(root=str(data_root), download=False, split="fixed", split_seed=1)
    fixed.seeds = [0, 1]
    (_, fixed0), (_, fixed1) = fixed.member_splits()
    assert torch.equal(fixed0, fixed1) and torch.equal(fixed0, val1)  # per_seed draws what split_seed=seed draws


def test_members_on_their_own_splits_train_and_validate_on_their_own_rows(data_root: Path) -> None:
    dm = FashionMNISTDataModule(root=str(data_root), download=False, split="per_seed", val_size=500,
                                train_subset=300, batch_size=128, eval_batch_size=200, batches_per_call=1)
    dm.seeds = dm.shuffle_seeds = [3, 4]
    dm.setup("fit")
    pool_y = dm.splits["train"][1]
    assert len(pool_y) == 60_000  # the pool of training images, no copy per member
    train_batches = [batch for group in dm.train_dataloader() for batch in group]
    val_batches = list(dm.val_dataloader())
    assert [tuple(y.shape) for _, y in val_batches] == [(2, 200), (2, 200), (2, 100)]
    for member, seed in enumerate((3, 4)):
        alone = FashionMNISTDataModule(root=str(data_root), download=False, split_seed=seed, val_size=500,
                                       train_subset=300, eval_batch_size=200)
        alone.setup("fit")  # the same member trained alone on a fixed split drawn with its seed
        assert torch.equal(torch.cat([y[member] for _, y in val_batches]), alone.splits["val"][1])
        assert torch.equal(torch.cat([X[member] for X, _ in val_batches]), alone.splits["val"][0])
        labels = torch.cat([y[member] for _, y in train_batches])
        assert torch.equal(labels.sort().values, alone.splits["train"][1].sort().values)
    assert not torch.equal(torch.cat([y[0] for _, y in val_batches]), torch.cat([y[1] for _, y in val_batches]))


def test_the_split_must_be_fixed_or_per_seed(data_root: Path) -> None:
    with pytest.raises(InvalidValueError, match="^data.split='random' is invalid: allowed one of fixed, per_seed"):
        FashionMNISTDataModule(root=str(data_root), download=False, split="random")
