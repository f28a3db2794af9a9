"""``python -m bridge``: the Kafka consumer and outbox relay."""

import sys

from bridge.main import main

sys.exit(main())
