import sys

from em_chunks.cli.main import main

sys.exit(main())
