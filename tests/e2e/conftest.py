from service.testing import *  # noqa: F401,F403  (the shared fixtures)
