"""Small helpers shared by every stage (files written atomically)."""
