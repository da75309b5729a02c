"""agent.feedback."""
