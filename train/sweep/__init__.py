"""Sweeps: the Hydra callback (configs/config.yaml) that checks every point of a multirun grid and
prepares the data once before the first job, and records each job's outcome for the report.
May import train.config and data/; never the engine."""
