#!/usr/bin/env python3
"""A stand-in for conntrackd in unit tests (the real one runs in the lab tests).

`stub -C CONF`: the daemon. Opens the control socket named in CONF and waits; exits with
status 3 (after printing a line, as conntrackd does) when the file CRASH beside CONF appears.
`stub -C CONF -x`: a client call. Appends "-x" to CALLS beside CONF, sleeps the seconds in
the file SLOW beside CONF if it exists, exits 0.
"""

import os
import re
import socket
import sys
import time
from pathlib import Path

conf = Path(sys.argv[2])
here = conf.parent
args = sys.argv[3:]
if args:
    with (here / "CALLS").open("a") as f:
        f.write(" ".join(args) + "\n")
    slow = here / "SLOW"
    if slow.exists():
        time.sleep(float(slow.read_text()))
    sys.exit(0)
path = re.search(r"Path (\S+)", conf.read_text()).group(1)
lock = re.search(r"LockFile (\S+)", conf.read_text()).group(1)
if os.path.exists(lock):
    print("[ERROR] lockfile exists, perhaps conntrackd already running?", flush=True)
    sys.exit(1)
Path(lock).write_text(str(os.getpid()))
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(4)
(here / "PIDS").open("a").write(f"{os.getpid()}\n")
while not (here / "CRASH").exists():
    time.sleep(0.02)
(here / "CRASH").unlink()
print("[ERROR] stub: asked to crash", flush=True)
sys.exit(3)
