"""``python -m trainscope``: the same as the ``trainscope`` command."""

import sys

from trainscope.cli import main

if __name__ == "__main__":
    sys.exit(main())
