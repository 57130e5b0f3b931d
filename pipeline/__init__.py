"""pipeline: study specs, Ray Tune + Optuna search, MLflow tracking, Parquet tables, the CLI.

Everything Ray, Optuna, MLflow and pyarrow lives here; nothing of the method does.
"""
