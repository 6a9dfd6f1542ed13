"""The HTTP edge: the route table (`routes`), thin handlers beside it, and the middlewares."""
