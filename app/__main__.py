"""``python -m app`` in the checkout: the dashboard on localhost, as ``trainscope dashboard``; see `app.serve`."""

import sys

from trainscope.app.serve import main

if __name__ == "__main__":
    sys.exit(main())
