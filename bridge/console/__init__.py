"""The operator console at /admin/ui/."""
