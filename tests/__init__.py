"""Trial tests for SocketDock."""
