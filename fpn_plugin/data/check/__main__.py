"""``python -m fpn_plugin.data.check``: see :mod:`fpn_plugin.data.check.cli`."""
import sys

from .cli import main

sys.exit(main())
