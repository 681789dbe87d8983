"""``python -m soakd.reference``: run the reference server."""

from soakd.reference.cli import main

raise SystemExit(main())
