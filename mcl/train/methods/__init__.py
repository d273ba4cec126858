"""Continual-learning methods, registered by name (import order fixes the listing order)."""

from mcl.train.methods.base import METHODS, Context, Method, register
from mcl.train.methods import seq, er, ewc, agem, gem, mtl, one, olora, prompts, ilora  # noqa: F401,E402  (registration)

__all__ = ["METHODS", "Context", "Method", "register"]
