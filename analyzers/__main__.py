"""``python -m analyzers LOGDIR``: see `analyzers.cli`."""

import sys

from trainscope.analyzers.cli import main

if __name__ == "__main__":
    sys.exit(main())
