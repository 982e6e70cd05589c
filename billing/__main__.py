"""`python -m billing`: the command line."""

import sys

from billing.cli import main

sys.exit(main())
