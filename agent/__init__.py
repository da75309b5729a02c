"""agent: offline-first RFID attendance agent for iFlow."""

__version__ = "0.1.0"

# The start of the month this version was made. A scan stamped earlier cannot
# be right (the clock was never set: 1970, or an old image's saved time): it is
# held, not sent. Bump with the version.
BUILD_DATE = "2026-11-01"
