import sys

import outdir  # the standard library only: quick to import, so that Ctrl-C from here on is one line

try:
    from .train import main

    status = main()
except KeyboardInterrupt:  # while importing torch (seconds), before main's handlers are in place
    outdir.interrupted_while_starting("__main__")
sys.exit(status)
