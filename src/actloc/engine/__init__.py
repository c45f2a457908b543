"""What every training shares: the optimisation loop, EMA, schedule, checkpoints and the device."""
