"""Attachment files: where their bytes live (storage) and how they are served (routes)."""
