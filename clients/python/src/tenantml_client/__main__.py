"""``python -m tenantml_client``: the ``tenantml`` command."""

from tenantml_client.cli import main

raise SystemExit(main())
