"""Training: the trainer, its hooks, schedules and precision."""
