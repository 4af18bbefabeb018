"""``python -m MRIDenoiseLib``: the command-line interface."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the libraries load: one line, no traceback
    print("mridenoise: cancelled; nothing was written", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
