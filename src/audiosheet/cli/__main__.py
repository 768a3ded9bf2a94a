"""``python -m audiosheet.cli``."""
import sys

from audiosheet.cli import main

sys.exit(main())
