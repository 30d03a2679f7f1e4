"""hnm: hard-negative mining for domain-specific retrieval (Meghwani et al., ACL 2025 Industry).

The library is importable without torch; heavy dependencies load inside the stage that needs them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
