"""`python -m training.commands ...` is `eomt ...` (for `accelerate launch -m training.commands train ...`)."""

import sys

from training.commands import main

sys.exit(main())
