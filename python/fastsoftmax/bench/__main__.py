"""``python -m fastsoftmax.bench``: see the package docstring and ``--help``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
