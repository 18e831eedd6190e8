"""
The callback edge: the twisted.web resource tree through which the backend
reaches its clients and an operator reads the instance, and its Site.
"""
