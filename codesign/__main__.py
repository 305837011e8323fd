"""``python -m codesign`` runs the command line."""

from codesign.cli.main import main

raise SystemExit(main())
