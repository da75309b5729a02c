"""agent: offline-first RFID attendance agent for iFlow."""

__version__ = "0.1.0"
