"""Dataset readers (snapshot folders)."""
