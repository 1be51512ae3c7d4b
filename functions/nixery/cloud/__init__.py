"""The Google Cloud deployment: the function's and the builder's wiring, the call between them,
signed URLs and ID tokens, and the dev stack that runs it all on the emulators."""
