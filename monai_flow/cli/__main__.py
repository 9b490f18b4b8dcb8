"""``python -m monai_flow.cli``: the ``monai-flow`` command line."""

import sys

from . import main

sys.exit(main())
