"""Networks and noise layers."""

from dropout_lab.models.dropout import check_rate, dropout_layer
from dropout_lab.models.mlp import DropoutMLPConcise, DropoutMLPScratch
from dropout_lab.models.noise import NOISE_TECHNIQUES, DropConnectLinear, make_noise
from dropout_lab.models.noisy_mlp import NoisyMLP

__all__ = ["NOISE_TECHNIQUES", "DropConnectLinear", "DropoutMLPConcise", "DropoutMLPScratch", "NoisyMLP",
           "check_rate", "dropout_layer", "make_noise"]
