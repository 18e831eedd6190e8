"""
What an operator reads and the process needs: metrics, JSON log lines, the
open-file limit.  Imports nothing else of SocketDock's but :mod:`socketdock.config`.
"""
