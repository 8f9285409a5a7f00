"""Training, data and metrics for EoMT: losses, mask annealing, the trainer, data sets, metrics and the CLI."""
