"""``python -m bench``: the benchmark program (so that bench.run is imported once,
as itself, and bench.startup shares its helpers rather than a second copy)."""

from bench.run import main

raise SystemExit(main())
