"""Storage: the SQL catalog (source of truth) and, later, the vector indexes built from it."""
