"""Where the test data lives.

``tests/fixtures/mongo-tools/`` holds real oplogs and dumps written by real
mongod servers, copied from the mongo-tools project (Apache License 2.0; see
its README.md there). ``BACKUPFLOWS_FIXTURES`` may point at another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(os.environ.get("BACKUPFLOWS_FIXTURES") or Path(__file__).parent / "fixtures")
MONGO_TOOLS = FIXTURES / "mongo-tools"
