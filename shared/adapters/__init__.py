"""External services, each imported only by the function that talks to it.

botocore (`aws`, `awsquery`, `mail`, `avatars`), elastic_transport (`cluster`;
the tools' `search.client()` the full elasticsearch client) and argon2
(`passwords`) load on first use, so even those functions pay for them only
when they first need them.
"""
