"""The Hydra applications behind ``dropout-lab train`` and ``dropout-lab worker``, and their link to the store."""
