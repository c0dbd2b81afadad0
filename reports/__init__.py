"""Reports from MLflow runs: Pareto plots, tables, learning curves and sample generations."""
