"""``python -m flowkit``: the same command line as the ``flowkit`` console script."""

import sys

from flowkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
