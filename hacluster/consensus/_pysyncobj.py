"""The only import of pysyncobj, with the repair its import needs.

pysyncobj 0.3.17 (tcp_connection -> win_inet_pton) replaces socket.inet_ntop with a
Windows-only ctypes version on every OS; pyroute2 then fails to decode any address in the
same process. The real function is put back at once: pysyncobj never needs the
replacement on Linux.
"""

import socket

_inet_ntop = socket.inet_ntop

from pysyncobj import SyncObj, SyncObjConf, replicated  # noqa: E402
from pysyncobj.transport import TCPTransport  # noqa: E402

socket.inet_ntop = _inet_ntop

__all__ = ["SyncObj", "SyncObjConf", "TCPTransport", "replicated"]
