"""The operator console at /admin/ui/: server-rendered pages (Jinja2) with one small script and
one style sheet shipped in the package, signed in by a session cookie (`sessions`)."""
