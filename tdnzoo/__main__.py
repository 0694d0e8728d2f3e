"""``python -m tdnzoo``: the same as the ``tdnzoo`` command."""
import sys

from .cli import main

sys.exit(main())
