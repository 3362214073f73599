"""`python -m controlplane.serve ...`: the `controlplane` command, for when its script is not on PATH."""

import sys

from controlplane.serve.cli import main

sys.exit(main())
