"""`python -m bloomkit`: the same as the `bloomkit` command."""

import sys

from bloomkit.cli import main

sys.exit(main())
