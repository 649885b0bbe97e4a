"""Fashion-MNIST files, in-memory batches and the Lightning data module."""

from dropout_lab.data.datamodule import FashionMNISTDataModule
from dropout_lab.data.files import ensure_fashion_mnist

__all__ = ["FashionMNISTDataModule", "ensure_fashion_mnist"]
