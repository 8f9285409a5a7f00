"""Data sets, readers and generators for EoMT training and evaluation."""
