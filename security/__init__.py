"""Users, the two passwords, lockout, one-time codes, sessions and tokens, identity verification."""
