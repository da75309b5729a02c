"""agent.reading."""
