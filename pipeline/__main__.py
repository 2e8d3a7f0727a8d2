"""`python -m seg_video`: the `seg-video` command."""

import sys

from seg_video.cli.main import main

sys.exit(main())
