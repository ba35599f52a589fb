"""``python -m pseudolabel.cli``."""
import sys

from pseudolabel.cli.main import main

sys.exit(main())
