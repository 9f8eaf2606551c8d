"""Training, evaluation and analysis commands. The only package that sees Hydra's config."""
