"""`python -m local.chaos` (make chaos): the run itself is `local.chaos.run`."""

import sys

from local.chaos.run import main

sys.exit(main())
