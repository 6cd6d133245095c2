"""`python -m partition` is the same as the `partition` console script."""

from partition.cli import main

raise SystemExit(main())
