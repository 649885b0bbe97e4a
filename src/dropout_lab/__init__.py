"""dropout-lab."""
