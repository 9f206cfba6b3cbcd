"""The tools around the product: the local stack, its stand-ins, measurement and operator commands.

Nothing here runs in production: the image Knative runs carries `shared/` and
`functions/` only.
"""
