"""The Optuna store: storages and heartbeats, claims, trial records and the run tables read back."""
