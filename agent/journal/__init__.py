"""agent.journal."""
