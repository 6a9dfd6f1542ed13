"""Built-in processors and the processor contract (see `registry`)."""
