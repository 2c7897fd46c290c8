"""Train state, optimizer, steps, loop, checkpoints, metrics."""
