import sys

from vjepa_pipeline.cli.main import main

sys.exit(main())
