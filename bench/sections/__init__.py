"""One module per section of the benchmark."""
