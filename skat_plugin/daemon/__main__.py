"""python3 -m skat_plugin.daemon [options]"""

import sys

from . import main

sys.exit(main(sys.argv[1:]))
