import sys

from moalign.cli import main

sys.exit(main())
