"""``python -m tuco_kernels.cli``: the ``tuco`` command."""

import sys

from . import main

sys.exit(main())
