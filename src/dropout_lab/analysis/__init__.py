"""Statistics over a study's stored runs: intervals and tests, sequential decisions, the declared plan."""
