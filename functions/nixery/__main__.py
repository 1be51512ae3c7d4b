import sys

from nixery.cli import main

sys.exit(main())
