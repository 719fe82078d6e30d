"""``python -m tuco_kernels``: the ``tuco`` command."""

import sys

from .cli import main

sys.exit(main())
