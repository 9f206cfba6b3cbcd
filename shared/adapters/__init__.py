"""External services, each imported only by the function that talks to it.

boto3 (`aws`, `mail`, `avatars`), elasticsearch (`search`) and argon2
(`passwords`) load on first use, so even those functions pay for them only
when they first need them.
"""
