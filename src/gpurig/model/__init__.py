"""The domain model: what a host is, with no I/O and no policy."""
