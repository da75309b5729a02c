from agent.commands.cli import main

raise SystemExit(main())
