"""`python -m edge.cli` = `pedf-edge`."""

import sys

from edge.cli import main

sys.exit(main())
