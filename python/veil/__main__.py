"""``python -m veil``: the ``veil`` command."""

import sys

from veil.cli import main

sys.exit(main())
