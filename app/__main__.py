"""``python -m app`` (or ``python path/to/app``): the dashboard on localhost; see `app.serve`."""

import sys
from pathlib import Path

try:
    from app.serve import main
except ImportError:  # `python path/to/app` puts app/ on sys.path, not the checkout holding it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from app.serve import main

if __name__ == "__main__":
    sys.exit(main())
