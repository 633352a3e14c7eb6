"""Training: the distributed step, the loop, checkpoints, summaries and the run directory."""
