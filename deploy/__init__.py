"""Operator tools that are not part of the installed `syncstudy` package: the cluster head's
tracking services (PostgreSQL + `mlflow server`), run from a checkout of the repository
(`python -m deploy.services up`) and by the cluster and outage tests."""
