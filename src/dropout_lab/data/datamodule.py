"""Fashion-MNIST as in-memory tensors, with a seeded validation split held out of the training images.

The split is ``fixed`` (drawn with ``split_seed``, the same for every run) or ``per_seed`` (drawn with each
run's own seed): where seeds are compared, the choice of validation images is then part of the variation
they sample, as it is in practice (Bouthillier et al., 2021, "Accounting for variance in machine learning
benchmarks").
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import torch

from dropout_lab.data.batches import MemberBatches, MemberRows, TensorBatches
from dropout_lab.data.files import SYSTEM_DIR, locate_fashion_mnist, read_fashion_mnist
from dropout_lab.errors import InvalidValueError

TRAIN_IMAGES = 60_000
#: ``data.split`` values: one split for every run (``split_seed``), or each run's own (its ``seed``).
SPLITS = ("fixed", "per_seed")


@functools.lru_cache(maxsize=2)
def load_tensors(root: str) -> dict[str, torch.Tensor]:
    """Read and verify the files of data location ``root`` (``locate_fashion_mnist``) once per process;
    pixels scaled to [0, 1] as ``ToTensor`` does."""
    out = {}
    for split, (images, labels) in read_fashion_mnist(root).items():
        out[f"{split}_x"] = images.unsqueeze(1).to(torch.float32).div_(255.0)
        out[f"{split}_y"] = labels.to(torch.long)
    return out


def split_indices(val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation rows of the 60k training images for ``split_seed``: the last
    ``60k - val_size`` and the first ``val_size`` of a permutation seeded with it."""
    order = torch.randperm(TRAIN_IMAGES, generator=torch.Generator().manual_seed(split_seed))
    return order[val_size:], order[:val_size]


@functools.lru_cache(maxsize=2)
def cpu_splits(root: str, val_size: int, split_seed: int, validate_on_test: bool, train_subset: int | None,
               test_subset: int | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The train/validation/test tensors on the CPU, built once per process and split configuration.

    The runs of a study worker share them, so a run adds no copy of the data set (the train and
    validation splits are gathered copies of the cached images, 181 MiB for 50k/10k). Nothing may
    write into them: batches are index copies (``TensorBatches``) and evaluation only reads.
    """
    t = load_tensors(root)
    test = (t["test_x"][:test_subset], t["test_y"][:test_subset])
    if validate_on_test:
        train, val = (t["train_x"], t["train_y"]), test
    else:
        train_idx, val_idx = split_indices(val_size, split_seed)
        train = (t["train_x"][train_idx], t["train_y"][train_idx])
        val = (t["train_x"][val_idx], t["train_y"][val_idx])
    train = (train[0][:train_subset], train[1][:train_subset])
    return {"train": train, "val": val, "test": test}


class FashionMNISTDataModule(L.LightningDataModule):
    """Train/validation/test splits of Fashion-MNIST held as tensors on the training device.

    ``validate_on_test=True`` reproduces the book: train on all 60k images and validate on the
    test set. Otherwise ``val_size`` training images are held out for model selection and the test
    set gives final numbers only; they are chosen by ``split_seed`` (``split="fixed"``) or by each
    member's run seed (``split="per_seed"``; ``seeds``, set by the trainer, default ``[shuffle_seed]``,
    which is the run's seed unless overridden).

    Training batches are a population's (:class:`MemberBatches`): one shuffle per member, seeded with
    its ``shuffle_seeds`` entry (a single run: ``[shuffle_seed]``). Test batches are the same for every
    member; so are validation batches, unless members' split seeds differ (``per_seed``): then each
    member trains on its own training rows and is validated on its own validation rows, gathered
    from the pool of training images (:attr:`member_rows`; no copy of the images per member).
    ``train_dtype`` stores the training images in that type (bf16 populations).

    ``batches_per_call`` mini-batches go to each ``training_step`` call; every mini-batch still gets
    its own optimizer step, in the same order, so results do not depend on it. Set it to 1 for
    callbacks that need Lightning's per-batch hooks per mini-batch.
    """

    def __init__(
        self,
        root: str | None = None,
        system_dir: str | None = str(SYSTEM_DIR),
        download: bool = True,
        batch_size: int = 256,
        eval_batch_size: int = 2000,
        val_size: int = 10_000,
        split: str = "fixed",
        split_seed: int = 0,
        validate_on_test: bool = False,
        train_subset: int | None = None,
        test_subset: int | None = None,
        shuffle_seed: int = 0,
        batches_per_call: int = 16,
    ) -> None:
        super().__init__()
        for field, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size),
                             ("data.batches_per_call", batches_per_call)):
            if value < 1:
                raise InvalidValueError(field, value, "an integer >= 1")
        if split not in SPLITS:
            raise InvalidValueError("data.split", split, f"one of {', '.join(SPLITS)} (fixed: the same "
                                    "validation images for every run, drawn with data.split_seed; per_seed: "
                                    "drawn with each run's seed)")
        if not 0 < val_size < TRAIN_IMAGES:
            raise InvalidValueError("data.val_size", val_size, f"an integer in [1, {TRAIN_IMAGES - 1}]")
        for field, subset in (("data.train_subset", train_subset), ("data.test_subset", test_subset)):
            if subset is not None and subset < 1:
                raise InvalidValueError(field, subset, "null or an integer >= 1")
        self.root = str(Path(root).expanduser()) if root else None  # None: the Debian copy or the user's cache
        self.system_dir = system_dir
        self.download = download
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.split = split
        self.split_seed = split_seed
        self.validate_on_test = validate_on_test
        self.train_subset = train_subset
        self.test_subset = test_subset
        self.shuffle_seeds = [shuffle_seed]
        self.seeds = [shuffle_seed]
        self.train_dtype: torch.dtype | None = None
        self.batches_per_call = batches_per_call
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        #: ``train`` and ``val``: each member's rows of the training images (``[K, n]``), when members' splits differ.
        self.member_rows: dict[str, torch.Tensor] = {}
        self._val_rows: MemberRows | None = None

    @property
    def split_seeds(self) -> list[int]:
        """Each member's split seed: ``split_seed`` (``fixed``), or its run's seed (``per_seed``)."""
        return [self.split_seed if self.split == "fixed" else seed for seed in self.seeds]

    def member_splits(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each member's training and validation rows of the 60k training images (before ``train_subset``)."""
        return [split_indices(self.val_size, seed) for seed in self.split_seeds]

    def prepare_data(self) -> None:
        locate_fashion_mnist(self.root, self.system_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        location = str(locate_fashion_mnist(self.root, self.system_dir, self.download))
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        seeds = self.split_seeds
        if self.validate_on_test or len(set(seeds)) == 1:  # one split for all members
            splits = cpu_splits(location, self.val_size, seeds[0], self.validate_on_test, self.train_subset,
                                self.test_subset)
            self.splits = {name: (x.to(device), y.to(device)) for name, (x, y) in splits.items()}
            return
        images = load_tensors(location)
        pool = images["train_x"].to(device), images["train_y"].to(device)
        test = images["test_x"][:self.test_subset].to(device), images["test_y"][:self.test_subset].to(device)
        self.splits = {"train": pool, "val": pool, "test": test}
        rows = self.member_splits()
        self.member_rows = {"train": torch.stack([train[:self.train_subset] for train, _ in rows]).to(device),
                            "val": torch.stack([val for _, val in rows]).to(device)}
        self._val_rows = MemberRows(*pool, self.member_rows["val"], self.eval_batch_size)

    def train_dataloader(self) -> MemberBatches:
        """Each member's shuffled training batches, in groups of ``batches_per_call`` steps."""
        X, y = self.splits["train"]
        return MemberBatches(X, y, self.batch_size, self.shuffle_seeds, self.batches_per_call, self.train_dtype,
                             rows=self.member_rows.get("train"))

    def val_dataloader(self) -> TensorBatches | MemberRows:
        """The validation batches: shared, or (members' splits differ) each member's own rows, one object per
        fit so that members who leave leave it too (``MemberRows.keep``)."""
        if self._val_rows is not None:
            return self._val_rows
        return TensorBatches(*self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self.splits["test"], self.eval_batch_size)
