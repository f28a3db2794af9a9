"""``python -m bridge.web``: serve the HTTP API and the web UI."""

import sys

from bridge.web.serve import main

sys.exit(main())
