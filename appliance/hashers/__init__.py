"""Hash functions of file bytes and decoded pixels (digests, PDQ, ...)."""
