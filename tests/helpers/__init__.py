"""What the tests share, one of each: a way to wait, a port picker, the backing servers, the
events and rows of a test, a recording listener, the stack and its API client.

Test modules import from these modules and never from a conftest: the conftest files hold
only fixtures, because that is where pytest looks for them.
"""
