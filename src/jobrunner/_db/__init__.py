"""Database plumbing shared by every backend that writes the ``jobs`` tables."""
