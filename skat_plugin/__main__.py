import sys

from .quickset import main  # fdpi_cli's entry: `vrrp set` to the daemon, else cli.main()

sys.exit(main())
