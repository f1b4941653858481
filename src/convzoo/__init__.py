"""convzoo: the classic convolutional networks and the operations they are built from."""

__version__ = "0.1.0"
