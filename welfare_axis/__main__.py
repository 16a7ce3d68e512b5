"""`python -m welfare_axis ...` behaves exactly like the `welfare-axis` command."""

import sys

from welfare_axis.cli import main

sys.exit(main())
