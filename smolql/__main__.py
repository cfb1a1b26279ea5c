"""``python -m smolql`` runs the command line."""

import sys

from smolql.cli import main

sys.exit(main())
