"""n8n-bridge: run real Python from n8n workflows."""

from bridge.items import Binary, Item
from bridge.processors.registry import Context, processor

__version__ = "0.1.0"
__all__ = ["Binary", "Context", "Item", "__version__", "processor"]
