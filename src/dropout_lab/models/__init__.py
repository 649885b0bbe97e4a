"""Networks and noise layers."""

from dropout_lab.models.dropout import check_rate, dropout_layer
from dropout_lab.models.mlp import DropoutMLP, DropoutMLPScratch

__all__ = ["DropoutMLP", "DropoutMLPScratch", "check_rate", "dropout_layer"]
