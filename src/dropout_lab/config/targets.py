"""What configs may instantiate: Hydra 1.4's execution whitelist, shared by training and evaluation."""

from __future__ import annotations

#: Targets a run config may instantiate (``_target_`` of data, model, trainer and logger).
INSTANTIABLE_TARGETS = ("dropout_lab.*", "lightning.Trainer", "lightning.pytorch.loggers.CSVLogger",
                        "lightning.pytorch.loggers.TensorBoardLogger")
