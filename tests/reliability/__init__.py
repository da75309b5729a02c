"""The reliability suite: proof under faults (see docs/reliability.md)."""
