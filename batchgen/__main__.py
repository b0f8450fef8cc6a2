"""`python -m batchgen` is the same as the `batchgen` command."""

from batchgen.cli.main import main

raise SystemExit(main())
