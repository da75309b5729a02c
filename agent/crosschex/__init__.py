"""agent.crosschex."""
