"""The registry front: the pull side of the distribution API, names, tags and caches."""
