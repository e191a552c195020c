"""``python -m uringmq``: same as the ``uringmq`` command."""

import sys

from .cli import main

sys.exit(main())
