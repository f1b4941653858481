"""The data a run trains on: published sets, IDX folders and folders of images, read into memory.

    sets.py     ``open_data`` -> ``DataSet``: any data set as uint8 (N, C, H, W) tensors with class names
    catalog.py  the published sets (``NAMED``): sources, checksums, ``fetch_named``; CIFAR-10's binary archive
    folder.py   a folder of images sorted by class: walked, decoded once in parallel
    arrays.py   the cache of decoded folders, checked on every read
    tree.py     ``export_tree``: a data set written as a class-folder tree of PNGs
    idx.py      the IDX format (``read_idx``, bounded by its header) and the cache of decompressed copies
    source.py   Fashion-MNIST's files: ``CLASSES``, ``FILES``, ``find_data_dir``, ``load_split``, ``check``, ``fetch``
    memory.py   the memory a read may use, checked before the bytes exist
    batches.py  ``to_input`` (uint8 pixels -> network input) and ``Batches`` (mini-batches on the device)

Every problem a user can cause with the data raises ``DataError`` with a message naming the file.
The names below are the ones the rest of convzoo uses. Module-level settings are read where they
are defined (``source.DEBIAN_DIR``, ``idx._SETTLED_NS``): patch them there, not here.
"""

from ..errors import DataError
from .batches import Batches, to_input
from .catalog import NAMED, fetch_named
from .idx import read_idx
from .sets import FASHION_DESCRIPTION, DataSet, data_name, open_data, stratified_split
from .source import CLASSES, DEFAULT_MIRROR, FILES, check, fetch, find_data_dir, load_split
from .tree import export_tree

__all__ = [
    "CLASSES", "DEFAULT_MIRROR", "FASHION_DESCRIPTION", "FILES", "NAMED", "Batches", "DataError", "DataSet", "check",
    "data_name", "export_tree", "fetch", "fetch_named", "find_data_dir", "load_split", "open_data", "read_idx",
    "stratified_split", "to_input",
]
