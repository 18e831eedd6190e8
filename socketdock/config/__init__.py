"""
Settings: the table of keys, how each value is parsed, and the checks that
need the operating system before twistd starts anything.  Imports nothing
else of SocketDock's.
"""
