"""Networks and noise layers."""

from dropout_lab.models.dropout import check_rate, dropout_layer
from dropout_lab.models.mlp import DropoutMLP, DropoutMLPScratch
from dropout_lab.models.noise import NOISE_TECHNIQUES, DropConnectLinear, make_noise
from dropout_lab.models.noisy_mlp import NoisyMLP

__all__ = ["NOISE_TECHNIQUES", "DropConnectLinear", "DropoutMLP", "DropoutMLPScratch", "NoisyMLP",
           "check_rate", "dropout_layer", "make_noise"]
