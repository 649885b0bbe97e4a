"""Lightning module, callbacks, the run record and the train entry point."""

from dropout_lab.training.classifier import Classifier
from dropout_lab.training.run_record import RunRecord, config_hash
from dropout_lab.training.train import train

__all__ = ["Classifier", "RunRecord", "config_hash", "train"]
