"""``python -m transcoder.client``: the ``transcoder-client`` command."""

from __future__ import annotations

import sys

from transcoder.client.cli import main

if __name__ == "__main__":
    sys.exit(main())
