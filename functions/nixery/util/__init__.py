"""Small general tools: a bounded LRU, single-flight de-duplication, objects made on first use."""
