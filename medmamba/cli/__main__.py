import sys

from medmamba.cli.main import main

sys.exit(main())
