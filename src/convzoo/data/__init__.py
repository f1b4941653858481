"""Fashion-MNIST: read its IDX files, find or download them, and batch them in device memory.

    idx.py      the IDX format (``read_idx``) and the cache of decompressed copies (``raw_cache_dir``)
    source.py   the data set: ``CLASSES``, its ``FILES`` and checksums; ``find_data_dir``,
                ``load_split``, ``check``, ``fetch``
    batches.py  ``to_input`` (uint8 pixels -> network input) and ``Batches`` (mini-batches on the device)

Every problem a user can cause with the data raises ``DataError`` with a message naming the file.
The names below are the ones the rest of convzoo uses. Module-level settings are read where they
are defined (``source.DEBIAN_DIR``, ``idx._SETTLED_NS``): patch them there, not here.
"""

from ..errors import DataError
from .batches import Batches, to_input
from .idx import read_idx
from .source import CLASSES, DEFAULT_MIRROR, FILES, check, fetch, find_data_dir, load_split

__all__ = [
    "CLASSES", "DEFAULT_MIRROR", "FILES", "Batches", "DataError", "check", "fetch", "find_data_dir", "load_split",
    "read_idx", "to_input",
]
