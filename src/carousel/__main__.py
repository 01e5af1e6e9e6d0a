"""``python -m carousel``: the command line."""

import sys

from carousel.cli import main

sys.exit(main())
