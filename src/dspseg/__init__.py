"""dspseg: semantic segmentation from mixed annotations with Decoupled Semantic Prototypes."""

__version__ = "0.1.0"
