"""agent.delivery."""
