"""dropout-lab's Optuna sweeper for Hydra: ``hydra/sweeper=optuna`` with optuna >= 4.9."""
