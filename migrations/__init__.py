"""Alembic migrations of beatsqlalchemy, shipped in the wheel as ``beatsqlalchemy.migrations``."""
