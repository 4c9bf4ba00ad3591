"""Attachment files: where their bytes live (storage) and their signed URLs (signing)."""
