"""``python -m carousel``: the command line."""

import sys

from carousel.cli import main

if __name__ == "__main__":
    sys.exit(main())
