"""``python -m ntf_utils`` runs the demo (same options as ``python -m ntf_utils.demo``)."""

import sys

from .demo import main

if __name__ == "__main__":
    sys.exit(main())
