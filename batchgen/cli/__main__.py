"""`python -m batchgen.cli`: the same as the `batchgen` console script."""

from batchgen.cli import main

main()
