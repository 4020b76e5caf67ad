import sys

from gdn.cli import main

sys.exit(main())
