"""Packaged Hydra configuration (train.yaml, worker.yaml and their groups); read by Hydra as pkg://dropout_lab.conf."""
