"""Small general tools: a bounded LRU and single-flight de-duplication."""
