"""The embedded default on one machine: `nixery serve` wires front and builder in one process."""
