"""`python -m mailer`: the same as the `mailer` command (used to start worker processes)."""

import sys

from mailer.cli import main

sys.exit(main())
