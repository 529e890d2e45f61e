"""polydistill: distil multilingual teachers into small, fast students for low-resource languages."""

__version__ = "0.1.0"
