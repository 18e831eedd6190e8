"""Real client stacks (Node ws, Python websockets, Chromium) against SocketDock."""
