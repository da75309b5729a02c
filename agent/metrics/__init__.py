"""Metrics for Prometheus: the exposition (pure, :mod:`agent.metrics.exposition`)
and the daemon's textfile writer for node_exporter (:mod:`agent.metrics.textfile`)."""
