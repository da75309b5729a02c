"""agent.recording."""
