"""agent.commands."""
