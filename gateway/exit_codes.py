"""The exit statuses of `lgw`, apart from the CLI module so that the command handlers and
the kill-switch CLI share them without importing the parser (which imports them back).

0 success; 1 the job ran but some records were rejected; 2 the command could not run
(bad option, contract, copybook or input shape), with one error line; 3 a batch command
stopped by SIGTERM/SIGINT before its work was done (run it again to resume); 70 an
internal error; 75 `lgw score` found its pipeline paused by the kill switch; 130 another
command interrupted by Ctrl-C."""

from __future__ import annotations

EXIT_OK, EXIT_REJECTS, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 3  # batch commands stopped by SIGTERM/SIGINT before the work was done: run again to resume
EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h): a bug, never "some records were rejected"
EXIT_PAUSED = 75  # EX_TEMPFAIL: the kill switch says pause; the same command may succeed later
EXIT_SIGINT = 130  # 128 + SIGINT, as shells report it

__all__ = ["EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PAUSED", "EXIT_REJECTS",
           "EXIT_SIGINT"]
