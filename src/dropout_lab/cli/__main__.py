"""``python -m dropout_lab.cli``: the same as the ``dropout-lab`` command."""

import sys

from dropout_lab.cli import main

sys.exit(main())
