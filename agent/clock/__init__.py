"""agent.clock."""
